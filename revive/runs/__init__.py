"""Runs of runbooks: one record per run, a ledger of its steps, progress, abort requests.

Every non-idempotent action is recorded before and after it runs, so a resumed run (after
a crash, a SIGKILL or a Prefect retry) skips what is done and re-attaches to what was in
flight through the action's request id instead of starting it again. A running run beats a
heartbeat in the store; one whose heartbeat stopped is shown as crashed.
"""

from revive.runs.session import ActiveRunError, Heartbeat, Progress, RunSession

__all__ = ["ActiveRunError", "Heartbeat", "Progress", "RunSession"]
