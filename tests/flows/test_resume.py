"""A failover killed with SIGKILL mid-run, then resumed, does no step twice.

The simulator runs in its own process (``revive sim serve``) and outlives the runbook; the
runbook runs as ``revive run failover`` in another process, is killed while it provisions,
and ``revive run failover --resume RUN_ID`` finishes it. The simulator's own record of the
actions it received is the judge.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml

from revive.drill.server import free_port
from revive.store import db, service
from revive.topology import Environment, load
from tests.factories import EXAMPLE, REPO
from tests.prefect_server import stop

LIMIT_S = 240.0


def wait_for(predicate, *, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_then_resume_repeats_no_step(tmp_path: Path) -> None:
    topology = load(EXAMPLE).model_copy(update={"environment": Environment.drill})
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(topology.model_dump(mode="json"), sort_keys=False))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "REVIVE_DATABASE_URL": f"sqlite:///{tmp_path / 'runs.db'}",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    revive = str(Path(sys.executable).with_name("revive"))
    params = [f"topology={path}", "target_dc=dc2", "lost_dc=dc1", f"sim_url={base}"]
    log = (tmp_path / "sim.log").open("w")
    sim = subprocess.Popen(
        [sys.executable, "-m", "revive.cli.sim", "serve", "--topology", str(path),
         "--port", str(port), "--fault", "power-loss:dc1", "--seed", "3"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _get(base, "/healthz") is not None, limit=30, what="the simulator")
        first_log = (tmp_path / "first.log").open("w")
        first = subprocess.Popen(
            [revive, "run", "failover", *params], cwd=REPO, env=env, stdout=first_log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for(lambda: _count(base, "provision") >= 3, limit=LIMIT_S,
                     what="the failover to start provisioning")
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # the runbook and its Prefect server
            first.wait()
            first_log.close()
        before = Counter((a["kind"], a["target"]) for a in _get(base, "/actions")["actions"])
        engine = db.get_engine(env["REVIVE_DATABASE_URL"])
        with db.session(engine) as s:
            (run,) = service.get_all_runs(s)
            done_before = [st.step_key for st in service.get_steps(s, run_id=run.id)
                           if str(st.state) == "done"]
        engine.dispose()
        assert run.outcome == "running" and done_before  # killed mid-run, some steps done
        second = subprocess.run(
            [revive, "run", "failover", "--resume", run.id, *params], cwd=REPO, env=env,
            capture_output=True, text=True, timeout=LIMIT_S, check=False,
        )
        assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
        assert "recovered" in second.stdout
        actions = _get(base, "/actions")["actions"]
        counts = Counter((a["kind"], a["target"]) for a in actions)
        repeated = {k: n for k, n in counts.items() if n > 1}
        assert repeated == {}, repeated  # no provision, deploy, restart or copy twice
        assert all(counts[k] == 1 for k in before)  # in-flight actions were re-attached
        moves: dict[str, list[str]] = {}
        for e in _get(base, "/log")["log"]:
            if e["kind"] == "set_class_weights":
                moves.setdefault(e["target"], []).append(e["detail"])
        assert moves  # the ramp moved every class it had to
        for shares in moves.values():
            assert all(a != b for a, b in itertools.pairwise(shares))  # no move twice
    finally:
        stop(sim)
        log.close()


def _get(base: str, path: str):
    try:
        response = httpx.get(base + path, timeout=5)
    except httpx.HTTPError:
        return None
    return response.json() if response.is_success else None


def _count(base: str, kind: str) -> int:
    body = _get(base, "/actions") or {"actions": []}
    return sum(1 for a in body["actions"] if a["kind"] == kind)
