"""Helpers for the supervisord adapter tests: two real supervisords, a context, waits.

``Estate`` is what the module fixture started: one supervisord per DC (dc1, dc2) with the
``app`` (two sleeping processes) and ``worker`` (one) groups loaded at start, their conf and
artifacts directories, and dc1's registry. Tests build adapters over it with ``context``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revive.lab.supervisor import conf_dir, rpc
from revive.ops.endpoint import EndpointPolicy
from revive.ops.models import ActionRef, ActionStatus
from revive.ops.plugins import ToolContext, settings_of
from revive.topology import parse
from tests.factories import estate, service

TOOL = "procs"
USER = "revive"
PASSWORD = "s3cret-pw"
# Few, quick retries: a dead or silent supervisord fails the call in a few seconds at most.
POLICY = EndpointPolicy(max_attempts=2, backoff_base_s=0.01, backoff_cap_s=0.05)
WAIT_S = 60.0


@dataclass
class Estate:
    """The real programs of one test module."""

    root: Path
    ports: dict[str, int]
    dirs: dict[str, Path]
    password_file: Path
    registry_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, dc: str) -> str:
        return f"http://127.0.0.1:{self.ports[dc]}"

    def conf_dirs(self) -> dict[str, str]:
        return {dc: str(conf_dir(d)) for dc, d in self.dirs.items()}

    def artifacts_dirs(self) -> dict[str, str]:
        return {dc: str(self.root / "artifacts" / dc) for dc in self.dirs}

    def rpc(self, dc: str, method: str, *params: Any) -> Any:
        return rpc(self.ports[dc], USER, PASSWORD, method, *params)

    def processes(self, dc: str, group: str) -> list[dict[str, Any]]:
        """``group``'s processes in ``dc`` as supervisord lists them (sync, for asserts)."""
        return [p for p in self.rpc(dc, "supervisor.getAllProcessInfo") if p["group"] == group]

    def groups(self, dc: str) -> set[str]:
        return {p["group"] for p in self.rpc(dc, "supervisor.getAllProcessInfo")}

    def settings(self, **overrides: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "conf_dirs": self.conf_dirs(),
            "artifacts_dirs": self.artifacts_dirs(),
            "username": USER,
            "password_file": str(self.password_file),
            "programs": {
                "app": {"command": "sleep 600"},
                "worker": {"command": "sleep 60{instance}", "startsecs": 0},
            },
        }
        if self.registry_url:
            data["registry_urls"] = {"dc1": self.registry_url}
        data.update(overrides)
        return data


def context(
    replicas: dict[str, str],
    settings: dict[str, Any],
    *,
    spare: dict[str, int | None] | None = None,
    timeout_s: float = 10.0,
) -> ToolContext:
    """A context as ``build_toolbox`` makes it: through a topology that validates settings."""
    spare = spare or {}
    topology = parse(estate(
        service("app"), service("worker"),
        datacenters=[{"name": dc, "spare_instances": spare.get(dc)} for dc in ("dc1", "dc2")],
        ops_tools={TOOL: {"kind": "deploy", "adapter": "supervisord", "replicas": replicas,
                          "settings": settings}},
    ))
    tool = topology.ops_tools[TOOL]
    return ToolContext(TOOL, tool, settings_of(TOOL, tool), run_dc="dc1", timeout_s=timeout_s,
                       policy=POLICY, topology=topology)


async def wait_finished(adapter: Any, ref: ActionRef, timeout_s: float = WAIT_S
                        ) -> ActionStatus:
    """Poll ``action_status`` until the action finished (a generous deadline, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status: ActionStatus = await adapter.action_status(ref)
        if status.finished:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{ref.kind} {ref.target} still running after {timeout_s} s")
        await asyncio.sleep(0.2)


def wait_until(check: Any, what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll a synchronous ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except Exception:  # not there yet (a process still starting, a port not open)
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout_s} s")
        time.sleep(0.1)
