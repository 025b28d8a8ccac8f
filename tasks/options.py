"""Task options shared by every ops-tool task: retry transient errors only, never cache.

Side-effecting tasks must not be served from Prefect's cache (the same inputs would return
``Cached`` and do nothing), so every task here uses ``NO_CACHE``; idempotency comes from the
request ids the run's step ledger gives each action instead.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from revive.errors import TransientOpsError


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry when the failure is a TransientOpsError; a tool that said no is not retried."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as exc:
            error = exc
    return isinstance(error, TransientOpsError)


OPS = {
    "retries": 3,
    "retry_delay_seconds": [0.5, 1.0, 2.0],
    "retry_condition_fn": transient_only,
    "cache_policy": NO_CACHE,
    "persist_result": False,
    "timeout_seconds": 120,
}
