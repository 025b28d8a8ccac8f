"""The adapter benchmark runs end to end against the real programs and reports each goal.

No timing assertions: the goals are for ``make bench``, not for the test suite.
"""

from __future__ import annotations

import json

import pytest

from tests.bench.scripts import bench_script
from tests.ops.programs import require


def test_the_adapter_benchmark_times_each_adapter_beside_its_bare_request(
    capsys: pytest.CaptureFixture,
) -> None:
    require("prometheus")
    require("haproxy", paths=("/usr/sbin/haproxy",))
    with bench_script("adapters") as bench:
        assert bench.main(["--calls", "20", "--json"]) == 0
    captured = capsys.readouterr()
    rows = {row["name"]: row for row in json.loads(captured.out)["rows"]}
    assert set(rows) == {"prometheus query", "haproxy get weight"}
    for row in rows.values():
        assert row["adapter_ms"] > 0 and row["bare_ms"] > 0
        assert row["ratio"] == pytest.approx(row["adapter_ms"] / row["bare_ms"])
    assert "within 2x bare:" in captured.err and "under 5 ms:" in captured.err
