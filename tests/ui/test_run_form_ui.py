"""The failover's run form in the Prefect UI, filled in as an operator would in Chromium.

``revive deploy`` puts the 3-DC example on a real ``prefect server start`` with its UI; a
process worker polls the ``west`` pool. Debian's Chromium, driven by Playwright, opens
Deployments → failover-from-west → Run → Custom run, reads the form in the order a person
decides (lost DC, target DCs, dry run; no trigger fields anyone could type into). Every DC
field is a list shown at once, with no type tabs ("str", "None") to switch first. It picks
the lost DC from a list of exactly the topology's DCs and the target DC from the array's
multi-select, leaves the single target DC empty, switches dry run on and submits; then
follows the toast to the run until the page says Completed. The run's parameters are read
back over the REST API (an empty list is not sent, so no target DC), and revive's store
must say the run came from the UI.

A dry run needs tools to survey even if it changes nothing: the flow refuses to start
without any (the example's tools use the simulator adapter), so the worker acts on the
built-in simulator of the same estate, with east powered off.

Screenshots of the filled form and of the completed run go to
``$REVIVE_TEST_ARTIFACTS/run-form.png`` and ``run-completed.png``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from revive.drill.server import SimServer
from revive.sim import Simulator
from revive.store import db, service
from revive.topology import load
from tests.factories import REPO
from tests.postgres import throwaway_database
from tests.prefect_server import PREFECT, prefect_server, tail
from tests.ui.browser import artifact, chromium, local_context, require_browser

THREE_DC = "runbooks/examples/three-dc.yaml"
REVIVE = str(Path(sys.executable).with_name("revive"))
POOL = "west"
DEPLOYMENT = f"failover-from-{POOL}"
LOST, TARGET = "east", "west"
#: From Submit to Completed: a worker poll, a cold Python process, the survey and rehearsal.
RUN_TIMEOUT_S = 180.0
#: SIGTERM stops the worker within seconds here; by hand, an idle one once ignored it.
WORKER_STOP_S = 10.0


@pytest.fixture(scope="module")
def sync_api() -> Any:
    return require_browser()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sync_api: Any) -> Iterator[dict[str, str]]:
    """A Prefect server with its UI, and the example's pools and deployments on it. Its
    records are in PostgreSQL, as in production: on SQLite a loaded machine sometimes
    answers the form's create-run call 503, and the UI does not retry."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(throwaway_database("revive_prefect_form", "the UI form test"))
        database = url.set(drivername="postgresql+asyncpg").render_as_string(
            hide_password=False)
        env = stack.enter_context(prefect_server(tmp_path_factory.mktemp("prefect-form"),
                                                 ui=True, database=database))
        result = subprocess.run([REVIVE, "deploy", "--topology", THREE_DC], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert f"failover/{DEPLOYMENT}" in result.stdout
        yield env


@pytest.fixture(scope="module")
def estate() -> Iterator[str]:
    """The example estate in the simulator, east powered off; yields its URL."""
    sim = Simulator(load(REPO / THREE_DC), seed=1)
    sim.advance(5)
    with SimServer(sim) as sim_server:
        sim.estate.power_loss(LOST)
        yield sim_server.url


@pytest.fixture(scope="module")
def worker(server: dict[str, str], estate: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A process worker on the ``west`` pool; yields its revive store URL and its log."""
    home = tmp_path_factory.mktemp("worker")
    store = f"sqlite:///{home / 'revive.db'}"
    log = home / "worker.log"
    env = {**server, "PREFECT_WORKER_QUERY_SECONDS": "1", "REVIVE_SIM_URL": estate,
           "REVIVE_DATABASE_URL": store, "REVIVE_TOPOLOGY": THREE_DC}
    with log.open("w") as out:
        process = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL], cwd=REPO,
                                   env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield store, log
    finally:
        _stop_worker(process)


def _stop_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to its process group (it and any flow run it started)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=WORKER_STOP_S)
    with contextlib.suppress(ProcessLookupError):  # its own session: only what it started
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _field(page: Any, label: str) -> Any:
    """A form field's box: its label, description and inputs."""
    return page.locator("label").filter(has_text=re.compile(
        rf"^{re.escape(label)} \(Optional\)$")).locator("xpath=ancestor::div[fieldset][1]")


def _dc_list(page: Any, label: str, expect: Any) -> Any:
    """The DC field ``label``'s list button, shown at once: no type tabs ("str", "None")
    to switch before the DCs can be picked."""
    field = _field(page, label)
    button = field.get_by_role("button", name=f"Select {label}", exact=True)
    expect(button).to_be_visible()
    expect(field.get_by_role("tab")).to_have_count(0)
    return button


def _pick(page: Any, button: Any, dc: str) -> list[str]:
    """Open the list behind ``button``, choose ``dc``; returns the choices it offered."""
    button.click()
    listbox = page.get_by_role("listbox")
    listbox.get_by_role("option").first.wait_for()
    offered = listbox.get_by_role("option").all_inner_texts()
    listbox.get_by_role("option", name=dc, exact=True).click()
    return offered


def _fill_the_form(page: Any, dcs: list[str], expect: Any) -> None:
    page.locator("label", has_text="Advanced (Optional)").wait_for()  # the form's last field
    labels = page.locator("label").all_inner_texts()
    order = [labels.index(f"{name} (Optional)")
             for name in ("Lost DC", "Target DCs", "Target DC", "Dry Run")]
    assert order == sorted(order), labels
    assert not [text for text in labels if text.lower().startswith("trigger")], labels

    target = _dc_list(page, "Target DC", expect)  # left empty: the DC comes from target_dcs
    expect(target).to_have_text("Select")
    run_from = _dc_list(page, "Run from DC", expect)  # the deployment's default
    expect(run_from).to_have_text(POOL)

    lost = _dc_list(page, "Lost DC", expect)
    expect(lost).to_have_text("Select")
    assert _pick(page, lost, LOST) == dcs
    expect(lost).to_have_text(LOST)

    targets = _field(page, "Target DCs")
    assert _pick(page, _dc_list(page, "Target DCs", expect), TARGET) == dcs  # a multi-select
    page.keyboard.press("Escape")
    expect(page.get_by_role("listbox")).to_have_count(0)
    expect(targets.get_by_role("button", name=f"Remove {TARGET} tag")).to_be_visible()
    expect(targets.get_by_role("button", name=re.compile(r"^Remove .* tag$"))).to_have_count(1)

    dry_run = page.get_by_role("switch", name="Dry Run (Optional)")
    dry_run.click()
    expect(dry_run).to_be_checked()


def _wait_for_the_end(page: Any, log: Path) -> str:
    """The run page's final state, reloading it while the run is on its way."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    final = re.compile(r"^(Completed|Failed|Crashed|Cancelled)$")
    while True:
        page.get_by_role("link", name=f"Deployment {DEPLOYMENT}").wait_for()
        state = page.locator("main").get_by_text(final)
        if state.count():
            return str(state.first.inner_text())
        assert time.monotonic() < deadline, f"the run did not end on its page:\n{tail(log)}"
        page.wait_for_timeout(2000)
        page.reload()


def test_a_dry_run_started_from_the_ui_form_completes(
        server: dict[str, str], worker: tuple[str, Path], sync_api: Any) -> None:
    store, log = worker
    dcs = list(load(REPO / THREE_DC).dc_names)
    with chromium(sync_api) as browser:
        context = local_context(browser, viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            page.goto(server["PREFECT_UI_URL"])
            page.get_by_role("link", name="Deployments", exact=True).first.click()
            page.get_by_role("link", name=DEPLOYMENT, exact=True).click()
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Custom run").click()
            _fill_the_form(page, dcs, sync_api.expect)
            page.screenshot(path=str(artifact("run-form.png")), full_page=True)

            page.get_by_role("button", name="Submit").click()
            page.get_by_role("link", name="View run").click(timeout=90_000)  # a busy machine
            page.wait_for_url(re.compile(r"/runs/flow-run/[0-9a-f-]{36}"))
            flow_run_id = re.search(r"/runs/flow-run/([0-9a-f-]{36})", page.url).group(1)
            state = _wait_for_the_end(page, log)
            page.get_by_role("tab", name="Artifacts").click()  # the rehearsed graph
            sync_api.expect(page.get_by_role("tabpanel", name="Artifacts")).to_contain_text(
                f"Recovery graph of {LOST} into {TARGET} (dry run)")
            page.screenshot(path=str(artifact("run-completed.png")), full_page=True)
            assert state == "Completed", f"the run ended {state}:\n{tail(log)}"
        finally:
            context.close()

    response = httpx.get(f"{server['PREFECT_API_URL']}/flow_runs/{flow_run_id}", timeout=10.0)
    response.raise_for_status()
    run = response.json()
    assert run["state_type"] == "COMPLETED"
    params = run["parameters"]["params"]
    assert (params["lost_dc"], params["target_dcs"], params["dry_run"]) == (LOST, [TARGET], True)
    assert params.get("target_dc") is None  # left empty: not sent, never a DC
    assert params["topology"] == THREE_DC
    assert params["advanced"]["run_from_dc"] == POOL
    assert not {"trigger", "triggered_by"} & set(params)

    engine = db.get_engine(store)
    try:
        with db.session(engine) as s:
            (record,) = service.get_all_runs(s)
            assert record.prefect_flow_run_id == flow_run_id
            assert (record.runbook, record.dry_run) == ("failover", True)
            assert (str(record.trigger), record.triggered_by) == ("ui", "unknown")
            assert record.parameters["lost_dc"] == LOST
    finally:
        engine.dispose()
    for name in ("run-form.png", "run-completed.png"):
        assert artifact(name).stat().st_size > 10_000
