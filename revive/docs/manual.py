"""What to do by hand when revive is unavailable: each step as the estate's own tool takes it.

A runbook step is an ``Action`` (restart a service in a DC, set a class's weights, copy an
image...). ``fallback`` finds the ops tool that would carry it (the first declared tool of
the kind, as the toolbox picks it) and asks the function registered for that tool's adapter
in ``COMMANDS`` for the commands a person types: the HAProxy runtime API through ``socat``,
``supervisorctl``, ``kubectl``, ``zkCli.sh``, ``curl`` against a registry or Prometheus. An
adapter without a function here (an in-house plug-in, the simulator, ``http-template``'s
free-form calls) gets the plain sentence of what to do with that tool, and the service's own
``manual:`` text says the rest. Commands quote every value that came from the topology.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from revive.errors import InputError
from revive.ops.plugins import settings_of
from revive.topology import OpsTool, ToolKind, Topology


class Verb(StrEnum):
    restart = "restart"
    deploy = "deploy"
    rollback = "rollback"
    provision = "provision"
    has_image = "has_image"
    copy_image = "copy_image"
    set_weights = "set_weights"
    flag_off = "flag_off"
    flag_on = "flag_on"
    retry_policy = "retry_policy"
    metrics = "metrics"
    health = "health"
    probe = "probe"


KIND = {
    Verb.restart: ToolKind.deploy, Verb.deploy: ToolKind.deploy, Verb.rollback: ToolKind.deploy,
    Verb.provision: ToolKind.compute, Verb.has_image: ToolKind.registry,
    Verb.copy_image: ToolKind.registry, Verb.set_weights: ToolKind.traffic,
    Verb.flag_off: ToolKind.config_store, Verb.flag_on: ToolKind.config_store,
    Verb.retry_policy: ToolKind.config_store, Verb.metrics: ToolKind.metrics,
    Verb.health: ToolKind.health_checker,
}
"""The tool kind that carries each verb; ``probe`` names its tool itself."""


class Action(BaseModel):
    """One thing a step does, with the names it does it to."""

    model_config = ConfigDict(frozen=True)

    verb: Verb
    service: str = ""
    dc: str = ""
    source_dc: str = ""
    traffic_class: str = ""
    weights: dict[str, float] = Field(default_factory=dict)
    count: int = 0
    version: str = "v1"
    feature: str = ""
    policy: str = ""
    """The client retry policy as JSON (``retry_policy``)."""
    tool: str = ""
    """The ops tool a ``probe`` asks."""

    def describe(self) -> str:
        """The action as a sentence a person can carry out with any console."""
        where = f" in {self.dc}" if self.dc else ""
        shares = ", ".join(f"{dc} {w:.0%}" for dc, w in self.weights.items())
        return {
            Verb.restart: f"restart every instance of {self.service}{where}",
            Verb.deploy: f"deploy {self.service} version {self.version}{where}"
                         + (f" ({self.count} instance(s))" if self.count else ""),
            Verb.rollback: f"roll {self.service}{where} back to its previous version",
            Verb.provision: f"start {self.count} more instance(s) of {self.service}{where}",
            Verb.has_image: f"check that {self.dc}'s registry has {self.service}:{self.version}",
            Verb.copy_image: f"copy the image {self.service}:{self.version} from "
                             f"{self.source_dc}'s registry to {self.dc}'s",
            Verb.set_weights: f"set the traffic weights of class {self.traffic_class} to "
                              f"{shares}",
            Verb.flag_off: f"switch feature {self.feature} of {self.service} off",
            Verb.flag_on: f"switch feature {self.feature} of {self.service} back on",
            Verb.retry_policy: f"publish the client retry policy {self.policy}",
            Verb.metrics: f"read the metrics of class {self.traffic_class}{where}",
            Verb.health: f"count the healthy instances of {self.service}{where}",
            Verb.probe: f"check that every replica of {self.tool} answers",
        }[self.verb]


class Fallback(BaseModel):
    """What a person does instead of revive: the tool, the sentence, the commands."""

    tool: str | None
    adapter: str | None
    what: str
    commands: list[str] = Field(default_factory=list)
    note: str = ""


class Tool(BaseModel):
    """A declared ops tool with its adapter's validated settings."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    spec: OpsTool
    settings: Any


Commands = Callable[[Tool, Action, Topology], list[str] | None]
"""An adapter's commands for an action, or None when the adapter does not do that verb."""

q = shlex.quote


def tool_for(topology: Topology, action: Action) -> Tool | None:
    """The tool that carries ``action``: the named one for a probe, else the first of its kind."""
    if action.verb == Verb.probe:
        name = action.tool if action.tool in topology.ops_tools else None
    else:
        name = next((n for n, t in topology.ops_tools.items() if t.kind == KIND[action.verb]),
                    None)
    if name is None:
        return None
    spec = topology.ops_tools[name]
    try:
        settings = settings_of(name, spec)
    except InputError:  # validated when the topology loaded; a broken plug-in stays generic
        settings = None
    return Tool(name=name, spec=spec, settings=settings)


def fallback(topology: Topology, action: Action) -> Fallback:
    """The manual fallback of ``action`` in this estate."""
    tool = tool_for(topology, action)
    what = action.describe()
    if tool is None:
        kind = KIND.get(action.verb, "ops")
        return Fallback(tool=None, adapter=None, what=f"{what} (no {kind} tool is declared: "
                        "use whatever console your team has for it)")
    make = COMMANDS.get(tool.spec.adapter)
    commands = make(tool, action, topology) if make is not None and tool.settings is not None \
        else None
    if commands is None:
        return Fallback(tool=tool.name, adapter=tool.spec.adapter,
                        what=f"use {tool.name}'s own console ({tool.spec.adapter}) to {what}",
                        note=NOTES.get(tool.spec.adapter, ""))
    return Fallback(tool=tool.name, adapter=tool.spec.adapter, what=what, commands=commands,
                    note=NOTES.get(tool.spec.adapter, ""))


NOTES = {
    "sim": "a simulated tool (drills only): in a real estate this is your tool's console",
    "haproxy": "send it to every HAProxy replica still standing; raise weights before "
               "lowering any, so a class never passes through all servers at 0",
    "zookeeper": "one standalone node per DC: write to every node still standing",
    "supervisord": "each DC's supervisord runs that DC's processes only",
    "kubernetes": "each DC has its own cluster API: act on the DC's own cluster",
    "registry-v2": "each DC pulls from its own registry",
}


# --- the adapters ---------------------------------------------------------------------------


def _haproxy(tool: Tool, action: Action, topology: Topology) -> list[str] | None:
    from revive.ops.adapters.haproxy import integer_weights, parse_replica_url

    s = tool.settings
    backend = s.backends.get(action.traffic_class)
    if action.verb != Verb.set_weights or backend is None:
        return None
    weights = integer_weights(action.weights, list(s.servers), tool=tool.name,
                              target=action.traffic_class)
    lines = [f"set weight {backend}/{s.servers[dc]} {w}"
             for dc, w in sorted(weights.items(), key=lambda item: -item[1])]
    out = []
    for dc in tool.spec.replicas | {d: "" for d in s.replicas}:
        if dc in s.replicas:
            target = s.replicas[dc].target()
        else:
            try:
                target = parse_replica_url(tool.spec.replicas[dc])
            except ValueError:
                continue
        address = (target.socket if target.socket is not None
                   else f"TCP:{target.host}:{target.port}")
        out += [f"echo {q(line)} | socat stdio {q(address)}   # {dc}" for line in lines]
    return out


def _auth(user: str | None, env: str | None, file: str | None) -> str:
    if not user:
        return ""
    password = f'"${env}"' if env else f'"$(cat {q(file or "")})"'
    return f" -u {q(user)} -p {password}"


def _supervisord(tool: Tool, action: Action, topology: Topology) -> list[str] | None:
    s = tool.settings
    url = tool.spec.replicas.get(action.dc)
    if url is None:
        return None
    ctl = f"supervisorctl -s {q(url)}{_auth(s.username, s.password_env, s.password_file)}"
    program = s.programs.get(action.service)
    group = (program.group if program is not None else None) or action.service
    conf = s.conf_dirs.get(action.dc)
    if action.verb == Verb.restart:
        return [f"{ctl} restart {q(group + ':*')}", f"{ctl} status"]
    if action.verb == Verb.provision and program is not None and conf is not None:
        first = program.extra_offset
        return [f"# copy {conf}/revive-{group}.conf to revive-{group}_extra_<k>.conf for k "
                f"= 1..{action.count}: program {group}_extra_<k>, port {program.base_port} "
                f"+ {first} + k - 1",
                f"{ctl} reread",
                *[f"{ctl} add {q(f'{group}_extra_{k}')}" for k in range(1, action.count + 1)]]
    if action.verb in (Verb.deploy, Verb.rollback) and conf is not None:
        registry = s.registry_urls.get(action.dc, "<the DC's registry>")
        artifacts = s.artifacts_dirs.get(action.dc, "<artifacts dir>")
        repo = s.repositories.get(action.service, action.service)
        fetch = (f"# fetch {registry}/v2/{repo} tag {action.version}, unpack its first layer "
                 f"into {artifacts}/{action.service}-{action.version}"
                 if action.verb == Verb.deploy else
                 f"# point {conf}/revive-{group}.conf back at the previous version's directory")
        return [fetch, f"{ctl} reread", f"{ctl} update {q(group)}", f"{ctl} status"]
    return None


def _kubernetes(tool: Tool, action: Action, topology: Topology) -> list[str] | None:
    s = tool.settings
    where = s.services.get(action.service)
    api = tool.spec.replicas.get(action.dc)
    if where is None or api is None:
        return None
    token = (f' --token "${s.token_env}"' if s.token_env else
             f' --token "$(cat {q(s.token_file)})"' if s.token_file else "")
    kubectl = f"kubectl --server {q(api)}{token} -n {q(where.namespace)}"
    deployment = f"deployment/{where.deployment}"
    if action.verb == Verb.restart:
        return [f"{kubectl} rollout restart {deployment}",
                f"{kubectl} rollout status {deployment}"]
    if action.verb == Verb.provision:
        have = topology.service(action.service).instances_in(action.dc) \
            if topology.has_service(action.service) else 0
        return [f"{kubectl} get {deployment}",
                f"{kubectl} scale {deployment} --replicas={have + action.count}"]
    if action.verb == Verb.deploy:
        container = where.container or "<first container>"
        image = (where.image.replace("{version}", action.version) if where.image
                 else f"<current repository>:{action.version}")
        return [f"{kubectl} set image {deployment} {q(f'{container}={image}')}",
                f"{kubectl} rollout status {deployment}"]
    if action.verb == Verb.rollback:
        return [f"{kubectl} rollout undo {deployment}", f"{kubectl} rollout status {deployment}"]
    return None


ACCEPT = ("application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


def _registry_v2(tool: Tool, action: Action, topology: Topology) -> list[str] | None:
    s = tool.settings
    repo = s.repositories.get(action.service, action.service)
    tag = s.tag_format.format(artifact=action.service, version=action.version)
    dst = tool.spec.replicas.get(action.dc)
    if dst is None:
        return None
    auth = creds = ""
    if s.username:
        password = f"${s.password_env}" if s.password_env else f"$(cat {q(s.password_file or '')})"
        auth = f' -u "{s.username}:{password}"'
        creds = f' --src-creds "{s.username}:{password}" --dest-creds "{s.username}:{password}"'
    check = f"curl -fsSI{auth} -H {q('Accept: ' + ACCEPT)} {q(f'{dst}/v2/{repo}/manifests/{tag}')}"
    if action.verb == Verb.has_image:
        return [check]
    src = tool.spec.replicas.get(action.source_dc)
    if action.verb != Verb.copy_image or src is None:
        return None
    insecure = " --src-tls-verify=false --dest-tls-verify=false" \
        if "http:" in (urlsplit(src).scheme + ":", urlsplit(dst).scheme + ":") else ""
    return [
        f"curl -fsS{auth} -H {q('Accept: ' + ACCEPT)} "
        f"{q(f'{src}/v2/{repo}/manifests/{tag}')}   # the source has it",
        f"skopeo copy{insecure}{creds} {q(f'docker://{urlsplit(src).netloc}/{repo}:{tag}')} "
        f"{q(f'docker://{urlsplit(dst).netloc}/{repo}:{tag}')}",
        check,
    ]


def _zk_nodes(tool: Tool) -> list[tuple[str, str]]:
    return [(dc, url.split("://", 1)[-1].rstrip("/")) for dc, url in tool.spec.replicas.items()]


def _zookeeper(tool: Tool, action: Action, topology: Topology) -> list[str] | None:
    s = tool.settings
    nodes = _zk_nodes(tool)
    if action.verb in (Verb.flag_off, Verb.flag_on):
        path = f"{s.flags_path}/{action.service}/{action.feature}"
        value = "off" if action.verb == Verb.flag_off else "on"
        return [f"zkCli.sh -server {q(node)} set {q(path)} {value}   # {dc}"
                for dc, node in nodes]
    if action.verb == Verb.retry_policy:
        return [f"zkCli.sh -server {q(node)} set {q(s.retry_policy_path)} {q(action.policy)}"
                f"   # {dc}" for dc, node in nodes]
    if action.verb == Verb.probe:
        out = []
        for dc, node in nodes:
            host, _, port = node.rpartition(":")
            host, port = (host, port) if port.isdigit() else (node, "2181")
            out += [f"echo ruok | nc {q(host)} {port}   # {dc}: imok",
                    f"echo srvr | nc {q(host)} {port}   # {dc}: a Mode: line"]
        return out
    return None


def _fill(expr: str, **values: str) -> str:
    for key, value in values.items():
        expr = expr.replace("{" + key + "}", value)
    return expr


def _prometheus(tool: Tool, action: Action, topology: Topology) -> list[str] | None:
    if action.verb != Verb.metrics or not tool.spec.replicas:
        return None
    s = tool.settings
    url = tool.spec.replicas.get(action.dc) or next(iter(tool.spec.replicas.values()))
    queries = s.queries.model_dump(exclude_none=True)
    return [f"curl -fsS --get --data-urlencode "
            f"{q('query=' + _fill(expr, **{'class': action.traffic_class, 'dc': action.dc}))} "
            f"{q(url + '/api/v1/query')}   # {name}"
            for name, expr in queries.items()]


def _http_health(tool: Tool, action: Action, topology: Topology) -> list[str] | None:
    if action.verb != Verb.health:
        return None
    s = tool.settings
    urls: list[str] = []
    if action.service in s.services:
        urls = [str(u) for u in s.services[action.service].urls.get(action.dc, [])]
    elif s.url is not None and (s.template_services is None
                                or action.service in s.template_services):
        n = topology.service(action.service).instances_in(action.dc) \
            if topology.has_service(action.service) else 0
        urls = [s.url.format(service=action.service, dc=action.dc, instance=i + 1, index=i)
                for i in range(n)]
    if not urls:
        return None
    proxy = tool.spec.replicas.get(action.dc, "direct")
    via = "" if proxy == "direct" else f" --proxy {q(proxy)}"
    return [f"curl -s -o /dev/null -m {s.timeout_s:g}{via} -w '%{{http_code}}\\n' {q(u)}"
            for u in urls]


def _vault(tool: Tool, action: Action, topology: Topology) -> list[str] | None:
    if action.verb != Verb.probe:
        return None
    return [f"curl -s -o /dev/null -w '%{{http_code}}\\n' "
            f"{q(url.rstrip('/') + '/v1/sys/health')}   # {dc}: 200 active, 429 standby, "
            "503 sealed" for dc, url in tool.spec.replicas.items()]


def _http_template(tool: Tool, action: Action, topology: Topology) -> list[str] | None:
    """The request the tool's template describes, with the values to fill in beside it."""
    method = {Verb.restart: "restart", Verb.deploy: "deploy", Verb.rollback: "set_version",
              Verb.provision: "provision", Verb.has_image: "has", Verb.copy_image: "copy",
              Verb.set_weights: "set_class_weights", Verb.flag_off: "set_flag",
              Verb.flag_on: "set_flag", Verb.retry_policy: "set_retry_policy",
              Verb.metrics: "class_sample", Verb.health: "healthy"}.get(action.verb)
    call = tool.settings.calls.get(method) if method else None
    if call is None:
        return None
    values = {k: v for k, v in {
        "service": action.service, "dc": action.dc, "traffic_class": action.traffic_class,
        "weights": json.dumps(action.weights) if action.weights else "",
        "count": str(action.count) if action.count else "", "feature": action.feature,
        "version": action.version if action.verb in (Verb.deploy, Verb.has_image,
                                                     Verb.copy_image) else "",
    }.items() if v}
    body = "" if call.body is None else f" --data {q(json.dumps(call.body))}"
    return [f"# fill in the template with {', '.join(f'{k}={v}' for k, v in values.items())}",
            f"curl -X {call.method} {q(call.url)}{body}   # relative to a replica of {tool.name}"]


COMMANDS: dict[str, Commands] = {
    "haproxy": _haproxy,
    "supervisord": _supervisord,
    "kubernetes": _kubernetes,
    "registry-v2": _registry_v2,
    "zookeeper": _zookeeper,
    "prometheus": _prometheus,
    "http-health": _http_health,
    "vault": _vault,
    "http-template": _http_template,
}
"""Adapter name -> the commands of its tool; any other adapter gets the generic sentence."""
