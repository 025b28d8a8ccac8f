"""``revive docs build``: a static site that reads offline, on the example estates and the lab.

Each site is checked as a whole: every relative link and fragment resolves inside it, nothing
is fetched from elsewhere, every service is there with its tier and owner, the restart order
is the planner's, and the manual commands name the estate's real tool settings.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from typer.testing import CliRunner

from revive.cli import app
from revive.lab import estate as lab
from revive.planning import plan_restart
from revive.topology import Topology, load
from tests.factories import REPO, dump, estate, example_data, service

runner = CliRunner()
EXAMPLES = {
    "example": REPO / "runbooks" / "topology.yaml",
    "three-dc": REPO / "runbooks" / "examples" / "three-dc.yaml",
}
LOCATED = re.compile(r"^\S+\.yaml:\d+ \S+: .+$")


class Page(HTMLParser):
    """Every id, every href/src, and the element the restart order lists."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.orders: dict[str, list[str]] = {}
        self._order: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if "id" in found:
            self.ids.add(found["id"])
            if tag == "ol" and found["id"].startswith("restart-order-"):
                self._order = found["id"].removeprefix("restart-order-")
                self.orders[self._order] = []
        for key in ("href", "src", "xlink:href", "action", "poster", "data"):
            if key in found and not (key == "data" and tag != "object"):
                self.links.append((tag, key, found[key]))
        if tag == "li" and self._order is not None and "data-service" in found:
            self.orders[self._order].append(found["data-service"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "ol":
            self._order = None


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def build(topology: Path, out: Path) -> None:
    result = runner.invoke(app, ["docs", "build", "--topology", str(topology), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def check_links(site: Path) -> dict[str, Page]:
    """Every relative link is a file of the site and every fragment an id on its page; no
    page loads anything from elsewhere."""
    pages = {p.name: parse(p) for p in site.glob("*.html")}
    assert "index.html" in pages
    for name, page in pages.items():
        for tag, attr, value in page.links:
            parts = urlsplit(value)
            assert not parts.scheme and not parts.netloc, f"{name}: {tag} {attr}={value!r}"
            target = unquote(parts.path) or name
            assert "/" not in target and target in pages, f"{name}: {value!r} resolves nowhere"
            if parts.fragment:
                assert unquote(parts.fragment) in pages[target].ids, \
                    f"{name}: {value!r}: no id {parts.fragment!r} on {target}"
        text = (site / name).read_text(encoding="utf-8")
        assert "<script" not in text and "@import" not in text and "url(" not in text, name
        assert "<link" not in text, name
    return pages


def lab_topology(tmp_path: Path) -> Path:
    """``runbooks/lab.yaml`` rendered as ``revive lab up`` renders it, with fixed addresses
    (no process is started)."""
    names = ("db", "db_exporter", "registry", "zookeeper", "supervisord", "haproxy_admin",
             "prometheus")
    services = lab._services()
    state = lab.LabState(
        lab_id="docs", dir=str(tmp_path / "lab"), isolation="loopback", services=services,
        dcs=[lab.DcLab(name=dc, address=f"127.0.0.{10 + i}",
                       ports={k: 30000 + 10 * i + j for j, k in enumerate(names)},
                       gslb_ports={s.traffic_class: 31000 + 10 * i + j
                                   for j, s in enumerate(services)},
                       local_ports={s.traffic_class: 32000 + 10 * i + j
                                    for j, s in enumerate(services)})
             for i, dc in enumerate(["dc1", "dc2"])])
    path = tmp_path / "lab-topology.yaml"
    path.write_text(lab.render_topology(state, tmp_path / "lab" / "supervisor.password"))
    return path


def assert_services_and_order(site: Path, topology: Topology, pages: dict[str, Page]) -> None:
    html = (site / "services.html").read_text(encoding="utf-8")
    for svc in topology.services:
        assert f"svc-{svc.name}" in pages["services.html"].ids
        section = html.split(f'id="svc-{svc.name}"', 1)[1].split("</section>", 1)[0]
        assert f"tier {svc.tier}" in section
        assert svc.owner is None or f'<dd class="owner">{svc.owner}</dd>' in section
    restart = pages["restart.html"]
    for dc in topology.dc_names:
        planned = [s.service for s in plan_restart(topology, dc).steps]
        assert restart.orders.get(dc, []) == planned


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_examples_build_into_an_existing_directory(tmp_path: Path, name: str) -> None:
    out = tmp_path / "site"
    out.mkdir()
    (out / "README.txt").write_text("kept")
    build(EXAMPLES[name], out)
    assert (out / "README.txt").read_text() == "kept"
    pages = check_links(out)
    assert {"services.html", "restart.html", "tools.html", "runbook-failover.html",
            "runbook-restart_service_groups.html"} <= set(pages)
    topology = load(EXAMPLES[name])
    assert_services_and_order(out, topology, pages)
    failover = (out / "runbook-failover.html").read_text(encoding="utf-8")
    for dc in topology.dc_names:
        assert f"lost-{dc}" in pages["runbook-failover.html"].ids
    assert "approval:traffic" in failover
    build(EXAMPLES[name], out)  # again, over its own output
    check_links(out)


def test_owners_are_listed_with_each_service(tmp_path: Path) -> None:
    data = example_data()
    for i, svc in enumerate(data["services"]):
        if i % 2 == 0:
            svc["owner"] = f"team-{svc['group']} (+1 555 01{i:02d})"
    path = tmp_path / "owned.yaml"
    path.write_text(dump(data))
    build(path, tmp_path / "site")
    pages = check_links(tmp_path / "site")
    assert_services_and_order(tmp_path / "site", load(path), pages)
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "team-storage (+1 555 0100)" in index


def test_the_lab_names_its_real_backends_servers_and_programs(tmp_path: Path) -> None:
    path = lab_topology(tmp_path)
    out = tmp_path / "site"
    build(path, out)
    pages = check_links(out)
    topology = load(path)
    assert_services_and_order(out, topology, pages)
    failover = (out / "runbook-failover.html").read_text(encoding="utf-8")
    settings = topology.ops_tools["gslb"].settings
    backend, server = settings["backends"]["accounts"], settings["servers"]["dc2"]
    assert backend == "gslb_accounts" and server == "dc2"
    dc2 = topology.ops_tools["gslb"].replicas["dc2"].removeprefix("tcp://")
    assert (f"echo &#39;set weight {backend}/{server} 256&#39; | socat stdio TCP:{dc2}"
            in failover)
    services = (out / "services.html").read_text(encoding="utf-8")
    supervisord = topology.ops_tools["deploy"].replicas["dc1"]
    assert f"supervisorctl -s {supervisord} -u revive" in services
    assert "restart &#39;login:*&#39;" in services
    tools = (out / "tools.html").read_text(encoding="utf-8")
    zk = topology.ops_tools["zookeeper"].replicas["dc2"]
    assert f"echo ruok | nc {zk.replace(':', ' ')}" in tools


def test_manual_text_and_owner_are_escaped(tmp_path: Path) -> None:
    hostile = "<script>alert(1)</script>\nthen <b>call</b> & \"wait\""
    data = estate(service("db", role="database", owner="<img src=x onerror=alert(1)>",
                          manual=hostile),
                  service("app", depends_on=["db"], manual="restart app by hand"))
    path = tmp_path / "hostile.yaml"
    path.write_text(dump(data))
    out = tmp_path / "site"
    build(path, out)
    check_links(out)
    for page in out.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<script>" not in text and "<img" not in text and "<b>call" not in text
    services = (out / "services.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in services
    assert "&lt;img src=x onerror=alert(1)&gt;" in services
    restart = (out / "runbook-restart_service_groups.html").read_text(encoding="utf-8")
    assert "restart app by hand" in restart


def test_a_bad_topology_is_exit_2_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(dump(estate(service("app", tier=7))))
    out = tmp_path / "site"
    result = runner.invoke(app, ["docs", "build", "--topology", str(path), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and LOCATED.match(lines[0]), result.stderr
    assert "services[0].tier" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("owner", ["x" * 201, ["a", "list"], ""])
def test_an_invalid_owner_is_exit_2_naming_the_key(tmp_path: Path, owner: object) -> None:
    path = tmp_path / "owner.yaml"
    path.write_text(dump(estate(service("app", owner=owner))))
    result = runner.invoke(app, ["docs", "build", "--topology", str(path),
                                 "--out", str(tmp_path / "site")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "services[0].owner" in result.stderr


def test_a_manual_text_past_its_bound_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "manual.yaml"
    path.write_text(dump(estate(service("app", manual="m" * 4001))))
    result = runner.invoke(app, ["check", "--topology", str(path)])
    assert result.exit_code == 2
    assert "services[0].manual" in result.stderr
    assert "4000" in result.stderr


def test_an_out_path_that_is_a_file_is_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "file"
    out.write_text("not a directory")
    result = runner.invoke(app, ["docs", "build", "--topology", str(EXAMPLES["example"]),
                                 "--out", str(out)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert out.read_text() == "not a directory"


def test_kubernetes_vault_and_simulated_tools_get_their_own_fallbacks(tmp_path: Path) -> None:
    both = {"dc1": "https://api.k8s.dc1.example:6443", "dc2": "https://api.k8s.dc2.example:6443"}
    data = estate(service("db", role="database"), service("app", depends_on=["db"]),
                  ops_tools={
                      "k8s": {"kind": "deploy", "adapter": "kubernetes", "replicas": both,
                              "settings": {"services": {"app": {"namespace": "shop",
                                                                "deployment": "app-web"}},
                                           "token_env": "K8S_TOKEN"}},
                      "vault": {"kind": "secret_store", "adapter": "vault",
                                "replicas": {"dc1": "https://vault.dc1.example",
                                             "dc2": "https://vault.dc2.example"}},
                      "gslb": {"kind": "traffic", "adapter": "sim",
                               "replicas": {"dc1": "https://gslb.dc1.example",
                                            "dc2": "https://gslb.dc2.example"}},
                  })
    path = tmp_path / "k8s.yaml"
    path.write_text(dump(data))
    out = tmp_path / "site"
    build(path, out)
    check_links(out)
    services = (out / "services.html").read_text(encoding="utf-8")
    api = "https://api.k8s.dc2.example:6443"
    assert (f'kubectl --server {api} --token &#34;$K8S_TOKEN&#34; -n shop rollout restart '
            "deployment/app-web") in services
    assert "use k8s&#39;s own console (kubernetes) to restart every instance of db" in services
    tools = (out / "tools.html").read_text(encoding="utf-8")
    assert "https://vault.dc2.example/v1/sys/health" in tools
    failover = (out / "runbook-failover.html").read_text(encoding="utf-8")
    assert "use gslb&#39;s own console (sim) to set the traffic weights of class tier0" in failover
