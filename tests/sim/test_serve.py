"""``revive sim serve``: the real console path serves HTTP; bad faults exit 2 before serving."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from revive.cli import sim as sim_cli
from revive.drill.server import free_port
from revive.sim.metrics import read_sample
from tests.factories import EXAMPLE, REPO

STARTUP_LIMIT_S = 20.0


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from revive.cli.sim import app; app()", "serve", *args]


def test_serve_answers_healthz_and_metrics_over_real_http() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = serve_command("--topology", str(EXAMPLE), "--port", str(port),
                            "--fault", "power-loss:dc1")
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            deadline = time.monotonic() + STARTUP_LIMIT_S
            with httpx.Client(base_url=base, timeout=2.0) as client:
                while True:
                    assert proc.poll() is None, "server exited early"
                    try:
                        health = client.get("/healthz")
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline:
                            pytest.fail(f"no answer on {base} within {STARTUP_LIMIT_S} s")
                        time.sleep(0.1)
                assert health.json() == {"ok": True, "time": 0.0}
                metrics = client.get("/metrics")
        finally:
            proc.terminate()
            stdout, stderr = proc.communicate(timeout=STARTUP_LIMIT_S)
    assert metrics.status_code == 200
    assert len(list(text_string_to_metric_families(metrics.text))) > 10
    assert 'revive_dc_up{dc="dc1"} 0.0' in metrics.text
    assert read_sample(metrics.text, "dc2").t == 0.0
    assert f"http://127.0.0.1:{port}" in stdout, (stdout, stderr)


def test_a_bad_fault_exits_2_without_serving() -> None:
    result = subprocess.run(
        serve_command("--topology", str(EXAMPLE), "--port", str(free_port()),
                      "--fault", "meteor-strike:dc1"),
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "meteor-strike" in result.stderr and "power-loss:DC" in result.stderr
    assert "serving" not in result.stdout


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("power-loss:dc9", "dc9"),
        ("tool-slow:vault:dc1", "tool-slow:TOOL:DC:SECONDS"),
        ("fail-restarts:dc1:login:many", "many"),
        ("tool-down:nothing:dc1", "nothing"),
    ],
)
def test_each_bad_fault_spec_is_an_input_error(
    spec: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[object] = []
    monkeypatch.setattr(sim_cli, "run_server", lambda *args: served.append(args))
    result = CliRunner().invoke(sim_cli.app, ["serve", "-t", str(EXAMPLE), "--fault", spec])
    assert result.exit_code == 2
    assert message in result.output
    assert served == []


def test_faults_are_applied_before_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[FastAPI, str, int]] = []

    def fake_server(api: FastAPI, host: str, port: int) -> None:
        served.append((api, host, port))

    monkeypatch.setattr(sim_cli, "run_server", fake_server)
    result = CliRunner().invoke(sim_cli.app, [
        "serve", "-t", str(EXAMPLE), "--seed", "4", "--port", "9999",
        "--fault", "exhaust-quota:dc2", "--fault", "tool-down:vault:dc1",
    ])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:9999" in result.output
    [(api, host, port)] = served
    assert (host, port) == ("127.0.0.1", 9999)
    assert isinstance(api, FastAPI)
    sim = api.state.sim
    assert sim.seed == 4
    assert sim.estate.quota("dc2") == 0
    assert not sim.estate.replica("vault", "dc1").reachable
