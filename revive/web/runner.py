"""Long work accepted from Slack, started after the answer: in this process or on a worker.

Slack gives a request 3 seconds, a recovery takes minutes, so the endpoints only answer and
hand the ``Job`` here. With a Prefect server configured (``PREFECT_API_URL``, or
``REVIVE_START_MODE=deployment``) the job becomes a run of the runbook's deployment on the
chosen DC's work pool (``<flow>/<flow>-from-<dc>``, as prefect.yaml names them), started
without waiting (``timeout=0``); the worker's run reports progress in its own living message.
Without one, the flow runs here, in a thread. Either way the outcome, or why nothing
started, goes back to the command's ``response_url``; failing to reach Slack is only logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from revive.chat.text import slack_escape
from revive.errors import ReviveError
from revive.runs.origin import origin_tags
from revive.store import db, service
from revive.store.models import TriggerSource
from revive.web.access import Access
from revive.web.replies import Job, Reply, run_outcome_text
from revive.web.settings import WebSettings

__all__ = ["BackgroundRunner", "deployment_name", "deployment_parameters", "slack_tags"]

log = logging.getLogger(__name__)

POST_TIMEOUT_S = 10.0
#: A response_url works for 30 minutes; later answers go to the channel as bot messages.
RESPONSE_URL_TTL_S = 29 * 60.0
#: A dry run or drill started here waits until Slack has been quiet this long...
REHEARSAL_QUIET_S = 0.2
#: ...but never longer than this: rehearsals yield to answering people, they never starve.
REHEARSAL_MAX_DEFER_S = 2.0


def deployment_parameters(job: Job) -> dict[str, Any]:
    """The job's parameters for a run of its deployment. Unset choices are left out, not
    sent as null: the deployment's form offers each DC field as a list of the topology's
    DCs, which a null would not validate against (Prefect enforces the schema)."""
    return {"params": job.params.model_dump(mode="json", exclude_none=True)}


def slack_tags(job: Job) -> list[str]:
    """Who started the job, on the flow run it becomes (never a parameter: see origin)."""
    return origin_tags(TriggerSource.SLACK, job.caller.identity)


def deployment_name(job: Job, run_from_dc: str | None) -> str:
    """``<flow>/<flow>-from-<dc>``: by default a run executes from the DC it recovers."""
    targets = getattr(job.params, "target_dcs", None) or [None]
    dc = run_from_dc or getattr(job.params, "run_from_dc", None) or \
        getattr(job.params, "target_dc", None) or targets[0]
    if not dc:
        raise ReviveError(f"cannot choose a work pool for {job.name}: no target_dc")
    return f"{job.flow.name}/{job.flow.name}-from-{dc}"


class BackgroundRunner:
    """Starts accepted jobs without waiting and posts each outcome to ``response_url``.

    ``client`` is the HTTP client used for posting (tests pass one with a mock transport);
    ``access`` audits how each job ended; ``release`` is told when a job's key is free again.
    """

    def __init__(self, settings: WebSettings, access: Access,
                 client: httpx.Client | None = None) -> None:
        self.settings = settings
        self.access = access
        self.client = client
        self.release: Any = lambda _key: None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="revive-slack")
        self._rehearsals = ThreadPoolExecutor(max_workers=settings.max_parallel_dry_runs,
                                              thread_name_prefix="revive-slack-dry")
        self._last_request = time.monotonic()
        self.rehearsal_quiet_s = REHEARSAL_QUIET_S
        self.rehearsal_max_defer_s = REHEARSAL_MAX_DEFER_S

    def saw_request(self) -> None:
        """A Slack request arrived: rehearsals about to start wait for the burst to pass."""
        self._last_request = time.monotonic()

    @property
    def uses_deployments(self) -> bool:
        mode = self.settings.start_mode
        return mode == "deployment" or (mode == "auto" and bool(os.environ.get("PREFECT_API_URL")))

    def start(self, job: Job) -> None:
        """Start ``job`` without waiting for it.

        A real run gets its own thread at once. Dry runs and drills run here at most
        ``max_parallel_dry_runs`` at a time, and each starts only once no Slack request has
        arrived for ``REHEARSAL_QUIET_S`` (``REHEARSAL_MAX_DEFER_S`` at most): a flow
        starting in this process holds the interpreter lock in long stretches, and a burst
        of rehearsals must neither starve this server (Slack waits 3 s for each answer) nor
        delay a real recovery."""
        target = self.execute_deployment if self.uses_deployments else self.execute
        rehearsal = job.kind == "drill" or bool(getattr(job.params, "dry_run", False))
        if rehearsal and target == self.execute:
            self._rehearsals.submit(self._execute_when_quiet, job)
            return
        threading.Thread(target=target, args=(job,), daemon=True,
                         name=f"revive-slack-{job.kind}-{job.name}").start()

    def _execute_when_quiet(self, job: Job) -> None:
        deadline = time.monotonic() + self.rehearsal_max_defer_s
        while (now := time.monotonic()) < deadline:
            quiet_for = now - self._last_request
            if quiet_for >= self.rehearsal_quiet_s:
                break
            time.sleep(min(self.rehearsal_quiet_s - quiet_for, deadline - now))
        self.execute(job)

    # --- in this process -------------------------------------------------------------------

    def execute(self, job: Job) -> None:
        """Run ``job`` to its end (in this thread), audit how it ended, post the outcome."""
        from revive.runs import ActiveRunError

        run_id: str | None = None
        try:
            from prefect import tags

            with tags(*slack_tags(job)):
                result = asyncio.run(job.flow(job.params))
            text, outcome = run_outcome_text(job, result)
            if isinstance(result, dict) and isinstance(result.get("run_id"), str):
                run_id = result["run_id"]
        except ActiveRunError as exc:
            run_id = exc.run_id
            text = (f":information_source: {slack_escape(str(exc))}; watch it with "
                    f"`/revive status`, or stop it with `/revive abort {exc.run_id}`.")
            outcome = "duplicate"
        except ReviveError as exc:
            text, outcome = f":x: *{slack_escape(job.name)}* failed: {slack_escape(str(exc))}", \
                "failed"
        except Exception as exc:
            log.exception("%s %s started from Slack failed", job.kind, job.name)
            text = (f":x: *{slack_escape(job.name)}* failed: "
                    f"{slack_escape(type(exc).__name__)} (details in the revive server log)")
            outcome = "error"
        finally:
            self.release(job.key)
        self.access.audit(job.caller, f"{job.kind} finished", job.name, outcome,
                          run_id=run_id if self._known(run_id) else None,
                          detail={"parameters": job.params.model_dump(mode="json")})
        self.answer(job, Reply(text, ephemeral=False))

    # --- on a worker -------------------------------------------------------------------------

    def execute_deployment(self, job: Job) -> None:
        """Create a run of the job's deployment (no waiting), or say why there is none."""
        try:
            name = deployment_name(job, self.settings.run_from_dc)
            text, outcome, flow_run_id = asyncio.run(self._create_flow_run(job, name))
        except Exception as exc:
            log.exception("could not start %s from Slack on Prefect", job.name)
            what = str(exc) if isinstance(exc, ReviveError) else type(exc).__name__
            text, outcome, flow_run_id = (
                f":x: *{slack_escape(job.name)}* was not started: {slack_escape(what)} "
                "(is the Prefect server up and the deployment applied?)", "error", None)
        finally:
            self.release(job.key)
        self.access.audit(job.caller, f"{job.kind} started", job.name, outcome,
                          detail={"parameters": job.params.model_dump(mode="json"),
                                  "flow_run_id": flow_run_id})
        self.answer(job, Reply(text, ephemeral=False))

    async def _create_flow_run(self, job: Job, name: str) -> tuple[str, str, str | None]:
        from prefect.deployments import run_deployment

        # No look at Prefect's flow runs for a duplicate here: one active run per (runbook,
        # DC) is the store's rule, applied when the worker's run opens its record; a flow run
        # Prefect still shows running after its worker died must not block a new one.
        key = f"slack:{job.caller.request_id}" if job.caller.request_id else None
        flow_run = await run_deployment(name, parameters=deployment_parameters(job), timeout=0,
                                        idempotency_key=key, tags=slack_tags(job))
        ui = os.environ.get("PREFECT_UI_URL")
        link = f" <{ui}/runs/flow-run/{flow_run.id}|open it in Prefect>" if ui else ""
        return (f":rocket: *{slack_escape(job.name)}* is queued on `{slack_escape(name)}` as "
                f"flow run `{flow_run.name}` ({flow_run.id}); progress follows in the run's "
                f"message.{link}", "started", str(flow_run.id))

    # --- Slack -------------------------------------------------------------------------------

    def _known(self, run_id: str | None) -> bool:
        """Whether ``run_id`` is in the store (the audit row's foreign key needs it)."""
        if run_id is None:
            return False
        try:
            with db.session(self.access.engine) as s:
                return service.get_run(s, run_id) is not None
        except Exception:
            return False

    def answer(self, job: Job, reply: Reply) -> bool:
        """The job's outcome to its channel: through ``response_url`` while Slack still takes
        it (30 minutes), after that as a bot message, if a bot token is configured."""
        age = time.monotonic() - job.caller.received_at
        if age < RESPONSE_URL_TTL_S and self.post(job.caller.response_url, reply.to_slack()):
            return True
        return self.post_to_channel(job.caller.channel_id, reply)

    def post_to_channel(self, channel: str, reply: Reply) -> bool:
        """``reply`` as a bot message in ``channel``; logged, never raised, when it cannot be."""
        from revive.chat.client import ENV_TOKEN, web_client_from_env

        if not os.environ.get(ENV_TOKEN, "").strip() or not channel:
            log.warning("cannot post to Slack (no bot token or channel): %s",
                        reply.to_slack()["text"])
            return False
        try:
            client = web_client_from_env(timeout_s=POST_TIMEOUT_S)
        except ValueError as exc:
            log.warning("cannot post to Slack: %s", exc)
            return False
        body = reply.to_slack()
        try:
            client.chat_postMessage(channel=channel, text=body["text"], blocks=body["blocks"])
        except Exception as exc:
            log.warning("could not post to Slack channel %s: %s", channel, exc)
            return False
        return True

    def post(self, url: str | None, payload: dict[str, Any]) -> bool:
        """POST ``payload`` to a ``response_url``; failures are logged, never raised."""
        if not url:
            log.info("no response_url; answer not posted: %s", payload.get("text"))
            return False
        try:
            if self.client is not None:
                response = self.client.post(url, json=payload, timeout=POST_TIMEOUT_S)
            else:
                response = httpx.post(url, json=payload, timeout=POST_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("could not post to Slack's response_url: %s", exc)
            return False
        return True

    def later(self, fn: Callable[..., Any], *args: Any) -> None:
        """``fn(*args)`` on a pool thread: a request being acknowledged never waits for it.
        An exception is logged (there is nobody left to raise it to)."""

        def guarded() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("background Slack work failed")

        self._pool.submit(guarded)
