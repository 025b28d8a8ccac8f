"""The status board (GET / and /board.json): from the store and the topology, whatever the
tools do, behind its token when one is set, and with every name escaped."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from revive.drill.server import SimServer
from revive.runs.drills import DrillSummary, record_drill
from revive.sim import Simulator
from revive.store import db, service
from revive.store.models import StepState, TriggerSource
from revive.topology import load
from revive.web.app import SLACK_OFF, create_app
from revive.web.board import COOKIE, cookie_value
from revive.web.board_data import dc_state, drill_trends
from revive.web.board_svg import rto_trend
from revive.web.settings import WebSettings
from tests.web.slack import TOPOLOGY, App, Client

TOKEN = "board-s3cret-token"


def board_app(*, token: str = "", topology: str = TOPOLOGY) -> Client:
    """The app as ``revive serve`` starts it without a signing secret."""
    settings = WebSettings(slack_signing_secret=SecretStr(""), board_token=SecretStr(token),
                           topology=topology, roles={})
    api = create_app(settings)
    api.state.board.tools_ttl_s = 0.0  # every request asks the tools again
    return Client(api)


@pytest.fixture(autouse=True)
def _no_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REVIVE_SIM_URL", raising=False)


@pytest.fixture
def silent_tools(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Tools that take the connection and never answer (a DC on fire)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        monkeypatch.setenv("REVIVE_SIM_URL", url)
        yield url


def add_run(engine_url: str, *, by: str = "ana", runbook: str = "failover",
            steps: tuple[tuple[str, StepState], ...] = ()) -> str:
    engine = db.get_engine(engine_url)
    try:
        with db.session(engine) as s:
            run = service.create_run(s, runbook=runbook, parameters={},
                                     trigger=TriggerSource.SLACK, triggered_by=by,
                                     target_dc="dc2")
            for key, state in steps:
                service.start_step(s, run_id=run.id, step_key=key, action=key.split(":")[0])
                if state != StepState.STARTED:
                    service.finish_step(s, run_id=run.id, step_key=key, state=state)
            return run.id
    finally:
        engine.dispose()


def test_the_board_answers_with_no_tool_answering(store: str, silent_tools: str) -> None:
    client = board_app()
    run_id = add_run(store, steps=(("copy:img@dc2", StepState.DONE),
                                   ("restart:login@dc2", StepState.STARTED)))
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<meta http-equiv="refresh" content="10">' in page.text
    assert "<script" not in page.text
    dc1 = re.search(r'<section class="dc" data-dc="dc1">(.*?)</section>', page.text, re.S)
    assert dc1 is not None and "unknown" in dc1.group(1)
    assert "traffic share: <strong>unknown</strong>" in page.text
    # runs and findings come from the store and the topology, tools or not
    assert run_id[:8] in page.text and "restart:login@dc2" in page.text
    assert "1/2 steps done" in page.text
    data = client.get("/board.json").json()
    assert [dc["state"] for dc in data["dcs"]] == ["unknown", "unknown"]
    assert all(dc["share"] is None and dc["services_up"] is None for dc in data["dcs"])
    assert set(data["dcs"][0]["class_shares"]) == set(load(TOPOLOGY).traffic_classes)
    # cut off at the board's deadline, or given up by the client's own timeout first
    assert data["problems"]["traffic"].startswith("traffic shares unknown (")
    (running,) = data["running"]
    assert (running["current_step"], running["steps_done"], running["steps"]) == \
        ("restart:login@dc2", 1, 2)
    assert data["findings"] and data["findings_checked_on"]


def test_the_board_says_unknown_without_tools_or_a_readable_topology(
        store: str, tmp_path: Path) -> None:
    data = board_app().get("/board.json").json()  # the example's tools are all simulated
    assert "REVIVE_SIM_URL" in data["problems"]["tools"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("datacenters: [\n", encoding="utf-8")
    client = board_app(topology=str(broken))
    page = client.get("/")
    assert page.status_code == 200
    assert "topology unreadable" in page.text
    assert "unknown: the topology could not be read" in page.text


def test_with_the_simulator_each_classs_share_per_dc_appears(
        store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    topology = load(TOPOLOGY)
    sim = Simulator(topology, seed=1)
    sim.advance(5)
    client = board_app()
    with SimServer(sim) as server:
        monkeypatch.setenv("REVIVE_SIM_URL", server.url)
        sim.estate.set_class_weights("tier1", {"dc1": 0.7, "dc2": 0.3})
        data = client.get("/board.json").json()
        page = client.get("/").text
        sim.estate.power_loss("dc1")
        after = client.get("/board.json").json()
    expected = sim.estate.class_weights
    by_dc = {dc["name"]: dc for dc in data["dcs"]}
    for cls, per_dc in expected.items():
        for dc, share in per_dc.items():
            assert by_dc[dc]["class_shares"][cls] == pytest.approx(share)
    assert by_dc["dc1"]["class_shares"]["tier1"] == pytest.approx(0.7)
    in_dc1 = sum(1 for svc in topology.services if svc.runs_in("dc1"))
    assert by_dc["dc1"]["state"] == "up" and by_dc["dc1"]["services_up"] == in_dc1
    assert not data["problems"]
    row = re.search(r'<section class="dc" data-dc="dc1">(.*?)</section>', page, re.S)
    assert row is not None and '<tr data-class="tier1"><td>tier1</td><td class="num">70%</td>' \
        in row.group(1)
    # dc1 lost: its health checker (dc1 only in the example) is gone with it; the shares
    # are still known, dc1's health is unknown with the reason
    dc1 = {dc["name"]: dc for dc in after["dcs"]}["dc1"]
    assert dc1["share"] is not None and dc1["services_up"] is None
    assert dc1["state"] == "unknown" and "health unknown" in dc1["problem"]


def test_the_token_is_asked_for_when_set(store: str) -> None:
    client = board_app(token=TOKEN)
    refused = client.get("/")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert '<form method="post" action="/">' in refused.text
    assert client.get("/board.json").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/?token=wrong").status_code == 401
    assert client.get("/healthz").status_code == 200  # for load balancers

    page = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200 and TOKEN not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src" not in page.headers["content-security-policy"]  # none at all
    assert client.get("/board.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert client.get(f"/board.json?token={TOKEN}").status_code == 200

    # a token in the URL becomes a cookie (not the token) and the bare URL
    given = client.get(f"/?token={TOKEN}")
    assert given.status_code == 303 and given.headers["location"] == "/"
    cookie = given.headers["set-cookie"]
    assert TOKEN not in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert f"{COOKIE}={cookie_value(TOKEN)}" in cookie
    with_cookie = client.get("/", headers={"Cookie": f"{COOKIE}={cookie_value(TOKEN)}"})
    assert with_cookie.status_code == 200
    assert client.get("/", headers={"Cookie": f"{COOKIE}={cookie_value('other')}"}
                      ).status_code == 401
    # the 401 page's form posts the token once
    posted = client.post("/", content=f"token={TOKEN}",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert posted.status_code == 303 and COOKIE in posted.headers["set-cookie"]
    assert client.post("/", content="token=nope",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}
                       ).status_code == 401


def test_without_a_signing_secret_the_board_serves_and_slack_answers_503(store: str) -> None:
    client = board_app()
    assert client.get("/").status_code == 200
    for path in ("/slack/commands", "/slack/interactions"):
        answer = client.post(path, content="command=%2Frevive&text=help")
        assert answer.status_code == 503
        assert answer.json() == {"error": SLACK_OFF}
        assert "REVIVE_SLACK_SIGNING_SECRET" in answer.json()["error"]


def test_with_a_signing_secret_the_board_serves_too(app: App) -> None:
    assert app.client.get("/").status_code == 200
    assert app.client.get("/board.json").json()["environment"] == "production"


def test_hostile_names_are_escaped(store: str) -> None:
    hostile = '<img src=x onerror="alert(1)">'
    client = board_app()
    add_run(store, by=hostile, runbook="<script>alert(2)</script>",
            steps=((f"restart:{hostile}", StepState.STARTED),))
    engine = db.get_engine(store)
    try:
        record_drill(engine, DrillSummary(
            run_id="d1", started_at=datetime.now(UTC), scenario=hostile, lost_dc="<b>dc1</b>",
            trigger="cli", outcome="recovered", rto_s={"tier0": 300.0},
            target_s={"tier0": 600.0}, report_dir=f"/tmp/{hostile}"), step_seconds={})
    finally:
        engine.dispose()
    page = client.get("/").text
    assert "<img" not in page and "<script" not in page and "<b>dc1" not in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page


def test_the_drills_section_shows_each_tiers_rto_against_its_target(store: str) -> None:
    client = board_app()  # migrates the store
    engine = db.get_engine(store)
    start = datetime(2026, 1, 5, 9, tzinfo=UTC)
    try:
        for n, (t0, t1) in enumerate([(400.0, 1200.0), (500.0, 1500.0), (700.0, None)]):
            record_drill(engine, DrillSummary(
                run_id=f"drill-{n}", started_at=start + timedelta(days=7 * n),
                scenario="dc-power-loss", lost_dc="dc1", trigger="schedule",
                outcome="degraded" if t1 is None else "recovered",
                rto_s={"tier0": t0, "tier1": t1}, target_s={"tier0": 600.0, "tier1": 1800.0},
                report_dir=f"/srv/drills/{n}"), step_seconds={})
    finally:
        engine.dispose()
    data = client.get("/board.json").json()
    tiers = {t["tier"]: t for t in data["drill_tiers"]}
    assert tiers["tier0"]["rto_s"] == [400.0, 500.0, 700.0]  # oldest first
    assert tiers["tier0"]["met"] is False and tiers["tier0"]["last"] == 700.0
    assert tiers["tier1"]["rto_s"] == [1200.0, 1500.0, None]
    assert tiers["tier0"]["trend"].startswith("▲")
    page = client.get("/").text
    tier0 = re.search(r'<tr data-tier="tier0">(.*?)</tr>', page, re.S)
    assert tier0 is not None
    assert "11:40" in tier0.group(1) and "10:00" in tier0.group(1)  # last RTO, target
    assert "missed" in tier0.group(1) and "<svg" in tier0.group(1)
    assert "/srv/drills/2" in page  # the newest drill's report


def test_the_trend_picture() -> None:
    svg = str(rto_trend("tier0", [400.0, 500.0, 700.0, None], 600.0))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<circle") == 3
    assert 'stroke-dasharray="4 3"' in svg  # the target
    assert "#CF222E" in svg and "#2DA44E" in svg  # a miss and two within the target
    assert "never" in svg  # the fourth drill never came back, said in the label
    assert "no drills yet" in str(rto_trend("tier0", [], None))
    assert "&lt;b&gt;" in str(rto_trend("<b>", [1.0], None))


def test_drill_trends_are_oldest_first_with_the_newest_target() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    newest_first = [
        DrillSummary(run_id=str(n), started_at=now - timedelta(days=n), scenario="s",
                     lost_dc="dc1", trigger="cli", outcome="recovered", report_dir="r",
                     rto_s={"tier0": float(100 * (n + 1))},
                     target_s={"tier0": 600.0 - n}) for n in range(3)]
    (row,) = drill_trends(newest_first)
    assert row.rto_s == [300.0, 200.0, 100.0] and row.target_s == 600.0
    assert row.met is True and row.trend.startswith("▼")


@pytest.mark.parametrize(("share", "services", "up", "state"), [
    (0.5, 10, 10, "up"), (0.5, 10, 7, "degraded"), (0.5, 10, 0, "down"), (0.0, 10, 10, "drained"),
    (None, 10, 10, "unknown"), (0.5, 10, None, "unknown"), (0.0, 10, None, "drained"),
    (None, 10, 0, "down"),
])
def test_dc_state(share: float | None, services: int, up: int | None, state: str) -> None:
    assert dc_state(share, services, up) == state
