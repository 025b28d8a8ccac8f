"""Runs started together in one process, the way ``revive serve`` starts them from Slack.

``python -m tests.cli.prefect_burst N [--shared] [--wait-for-signal]`` starts N flow runs at
once, each in its own thread and event loop, with no ``PREFECT_API_URL`` (so Prefect starts
its temporary server), after ``revive.prefect_server.install()`` when ``--shared`` is given.
It prints one JSON line: runs that succeeded, the errors of the others, and the process id
of every temporary server started (recorded where Prefect spawns them). With
``--wait-for-signal`` it then waits, with ``revive serve``'s signal handling, until stopped.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any


def main(argv: list[str]) -> None:
    count = int(argv[0])
    if "--shared" in argv:
        from revive.prefect_server import install

        install()
    from prefect import flow, task
    from prefect.server.api.server import SubprocessASGIServer

    spawned: list[int] = []
    spawn = SubprocessASGIServer._run_uvicorn_command

    def recording_spawn(self: Any) -> Any:
        process = spawn(self)
        spawned.append(process.pid)
        return process

    SubprocessASGIServer._run_uvicorn_command = recording_spawn

    @task
    async def step(i: int) -> int:
        return i * 2

    @flow
    async def one_run(i: int) -> int:
        return await step(i)

    together = threading.Barrier(count)
    results: dict[int, Any] = {}

    def start(i: int) -> None:
        together.wait()
        try:
            results[i] = asyncio.run(one_run(i))
        except Exception as exc:  # reported, not raised: the test judges every run
            results[i] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=start, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ok = sorted(i for i, r in results.items() if r == i * 2)
    errors = [str(r)[:300] for i, r in results.items() if r != i * 2]
    if "--wait-for-signal" in argv:  # before the report: the test signals once it has it
        from revive.cli.serve import exit_on_signals

        exit_on_signals()
    print(json.dumps({"ok": ok, "errors": errors, "servers": spawned}), flush=True)
    if "--wait-for-signal" in argv:
        threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
