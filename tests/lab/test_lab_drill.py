"""The lab end to end: up, a drill through the real adapters, down with nothing left.

Each scenario gets a lab of its own (a fire leaves its DC dead). These are the longest tests
in the suite (about a minute and a half each) because they run two DCs of real programs
and recover one in real time: ``make test`` runs the DC fire, ``make reliability`` the
partition too, and both give a row of docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from revive.lab import estate
from revive.lab.daemon import pid_alive
from revive.lab.netns import available
from tests.ops.programs import require
from tests.reliability.figures import full, record

REPO = Path(__file__).resolve().parents[2]


def _revive(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # As on an operator's host: this process is configured with a production estate. The
    # lab drill's gates still follow the lab's own (drill) topology, so nothing waits for an
    # approver.
    env = {**os.environ, "REVIVE_TOPOLOGY": str(REPO / "runbooks" / "topology.yaml")}
    return subprocess.run([str(Path(sys.executable).parent / "revive"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    for name, package in (("haproxy", "haproxy"), ("prometheus", "prometheus"),
                          ("docker-registry", "docker-registry"), ("supervisord", "supervisor")):
        require(name, package, paths=(f"/usr/sbin/{name}",))
    root = tmp_path / "lab"
    try:
        yield root
    finally:
        state = None
        with contextlib.suppress(estate.LabError):
            state = estate.load_state(root)
        down = _revive("lab", "down", "--dir", str(root), cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        if state is not None:  # nothing the lab started is still running
            pids = [*state.pids.values(), *(p for dc in state.dcs for p in dc.pids.values())]
            assert not [p for p in pids if pid_alive(p)]
            assert not estate._marked_pids(state.lab_id)


SCENARIOS = ["dc-fire", "partition"] if full() else ["dc-fire"]
FAULTS = {"dc-fire": "a DC of real programs killed (the lab's dc1), recovered into dc2",
          "partition": "a DC cut off from the network (netns), recovered into dc2"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_lab_drill_recovers_through_the_real_tools(
        lab: Path, scenario: str, request: pytest.FixtureRequest) -> None:
    if scenario == "partition" and not available()[0]:
        pytest.skip(f"partition needs network namespaces: {available()[1]}")
    cwd = lab.parent
    started = _revive("lab", "up", "--dir", str(lab), cwd=cwd)
    assert started.returncode == 0, started.stderr + started.stdout
    status = json.loads(_revive("lab", "status", "--dir", str(lab), "--json", cwd=cwd).stdout)
    assert status["up"] and all(p["running"] and p["answering"]
                                for dc in status["dcs"] for p in dc["components"].values())
    assert all(v is not None and v > 0.9 for v in status["users_success"].values())

    drill = _revive("drill", "--target", "lab", "--lab-dir", str(lab), "--scenario", scenario,
                    "--lost-dc", "dc1", "--out", str(cwd / "report"), cwd=cwd)
    assert drill.returncode == 0, drill.stderr[-3000:]
    report = json.loads((cwd / "report" / "report.json").read_text())
    assert report["target"] == "lab" and report["scenario"] == scenario
    rto = ", ".join(f"{tier} {s:.0f} s" for tier, s in report["rto_seconds"].items()
                    if s is not None)
    record("lab", FAULTS[scenario], trials=1,
           held=f"{report['outcome']} through the real adapters (RTO {rto or 'n/a'})",
           lost="nothing" if report["outcome"] == "recovered" else report["outcome"],
           test=request.node.nodeid)
    assert report["outcome"] == "recovered", (report["headline"], report["notes"])
    assert report["ramp_holds"] >= 1
    assert all(w == {"dc1": 0.0, "dc2": 1.0} for w in report["final_weights"].values())
    assert "search@dc2" in report["deployed"]  # cold standby: deployed from dc2's registry
    assert report["provisioned"]
    assert (cwd / "report" / "report.html").exists()


def test_a_drill_on_a_lab_that_is_not_up_is_invalid_input(tmp_path: Path) -> None:
    result = _revive("drill", "--target", "lab", "--lab-dir", str(tmp_path / "nothing"),
                     cwd=tmp_path)
    assert result.returncode == 2
    assert "no lab in" in result.stderr and "revive lab up" in result.stderr
    assert "Traceback" not in result.stderr
