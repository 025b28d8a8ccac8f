"""Run progress in Slack: one living message per run, its notes in the message's thread.

Slack can be slow, rate-limited, erroring or down while a DC fails over, and the failover
must run at full speed all the same, so:

* ``SlackSink`` makes all Slack calls (blocking slack_sdk ``WebClient`` calls with explicit
  timeouts and retry handlers) on ONE background worker thread fed by a queue, so a flow's
  event loop only ever appends to that queue;
* updates of a run's living message are merged: the newest card wins and at most one
  ``chat.update`` per run is sent per ``min_update_interval_s``; the final card (``finish``)
  is never dropped;
* every failed call is counted (``failures``) and its message written to a fallback
  ``ConsoleSink`` instead, so nothing a person should see is lost. After a few consecutive
  failures a circuit breaker sends messages straight to the fallback for a while rather
  than making each one wait for a timeout;
* ``aclose`` flushes what is queued, bounded by a timeout; what is still queued then goes
  to the fallback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient

from revive.chat.blocks import (
    MAX_BLOCKS,
    MAX_TEXT_CHARS,
    approval_buttons,
    text_to_blocks,
    truncate,
)
from revive.chat.client import DEFAULT_SLACK_API_URL, sdk_logger
from revive.chat.console import LOGGER_NAME, ConsoleSink
from revive.chat.models import RunCard, StepNote
from revive.chat.retry import describe_error, retry_handlers
from revive.chat.text import render_card, render_card_line, render_note

__all__ = ["SlackSettings", "SlackSink"]

_diag = logging.getLogger(f"{LOGGER_NAME}.slack")


@dataclass(frozen=True)
class SlackSettings:
    """How ``SlackSink`` talks to Slack; the defaults suit production.

    ``timeout_s`` bounds each HTTP attempt; ``breaker_threshold`` consecutive failures send
    messages straight to the fallback for ``breaker_cooldown_s``; ``max_queue`` bounds the
    posts (start and notes) waiting for the worker, beyond it they go to the fallback.
    """

    base_url: str = DEFAULT_SLACK_API_URL
    timeout_s: float = 5.0
    min_update_interval_s: float = 1.0
    close_timeout_s: float = 5.0
    rate_limit_retries: int = 2
    max_retry_after_s: float = 10.0
    server_error_retries: int = 2
    connection_retries: int = 1
    backoff_s: float = 0.25
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 30.0
    max_queue: int = 1_000


@dataclass
class _Run:
    """What the sink knows about one run's living message."""

    channel: str | None = None
    ts: str | None = None
    failed: bool = False
    """The living message could not be posted: everything for this run goes to the fallback."""
    last_write: float = float("-inf")
    pending: RunCard | None = None
    final: bool = False
    """``pending`` is the card ``finish`` sent."""
    finished: bool = False


@dataclass(frozen=True)
class _Start:
    card: RunCard


@dataclass(frozen=True)
class _Note:
    note: StepNote


@dataclass(frozen=True)
class _Update:
    card: RunCard
    final: bool


_Work = _Start | _Note | _Update


@dataclass
class _Counters:
    sent: int = 0
    failures: int = 0
    fallbacks: int = 0
    overflow: int = 0
    consecutive: int = 0
    breaker_until: float = float("-inf")


class SlackSink:
    """Slack Web API sink: one living message per run, notes in its thread.

    All Slack calls run on one daemon worker thread (started on first use). The public
    counters ``sent``, ``failures`` (Slack calls that failed) and ``fallbacks`` (messages
    written to the fallback instead) are there for tests and metrics.
    """

    def __init__(
        self,
        token: str,
        channel: str,
        *,
        settings: SlackSettings | None = None,
        fallback: ConsoleSink | None = None,
        client: WebClient | None = None,
    ) -> None:
        self.channel = channel
        self.settings = settings or SlackSettings()
        self.fallback = fallback or ConsoleSink()
        s = self.settings
        self._secret = token.strip()
        self._client = client or WebClient(
            token=self._secret,
            base_url=s.base_url,
            timeout=s.timeout_s,  # typed int in slack_sdk; urllib takes float seconds
            logger=sdk_logger,
            retry_handlers=retry_handlers(
                rate_limit_retries=s.rate_limit_retries,
                max_retry_after_s=s.max_retry_after_s,
                server_error_retries=s.server_error_retries,
                connection_retries=s.connection_retries,
                backoff_s=s.backoff_s,
            ),
        )
        self._cond = threading.Condition()
        self._ops: deque[_Start | _Note] = deque()
        self._runs: dict[str, _Run] = {}
        self._dirty: dict[str, None] = {}  # runs with a pending update, oldest first
        self._closing = False
        self._abandoned = False
        self._thread: threading.Thread | None = None
        self._n = _Counters()

    def __repr__(self) -> str:  # never shows the token
        return f"SlackSink(channel={self.channel!r}, base_url={self.settings.base_url!r})"

    @property
    def sent(self) -> int:
        return self._n.sent

    @property
    def failures(self) -> int:
        return self._n.failures

    @property
    def fallbacks(self) -> int:
        return self._n.fallbacks

    def stats(self) -> dict[str, int]:
        """Counters: sent, failures, fallbacks, overflow (posts refused by a full queue)."""
        with self._cond:
            n = self._n
            return {
                "sent": n.sent,
                "failures": n.failures,
                "fallbacks": n.fallbacks,
                "overflow": n.overflow,
            }

    # -- caller side: enqueue only --------------------------------------------------------

    async def start(self, card: RunCard) -> None:
        self._guard("start", card, lambda: self._submit_card(card, final=False, start=True))

    async def update(self, card: RunCard) -> None:
        self._guard("update", card, lambda: self._submit_card(card, final=False, start=False))

    async def finish(self, card: RunCard) -> None:
        self._guard("finish", card, lambda: self._submit_card(card, final=True, start=False))

    async def note(self, note: StepNote) -> None:
        self._guard("note", note, lambda: self._submit_note(note))

    async def aclose(self) -> None:
        """Flush for at most ``settings.close_timeout_s``, then stop the worker."""
        try:
            deadline = time.monotonic() + self.settings.close_timeout_s
            thread = self._begin_close()
            while thread is not None and thread.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            self._abandon()

    def close(self) -> None:
        """``aclose`` for code without an event loop (blocks up to the close timeout)."""
        try:
            thread = self._begin_close()
            if thread is not None:
                thread.join(self.settings.close_timeout_s)
        finally:
            self._abandon()

    def _guard(self, what: str, item: RunCard | StepNote, submit: Callable[[], None]) -> None:
        """Run ``submit``; an unexpected error is counted and the item written to the fallback."""
        try:
            submit()
        except Exception as err:  # chat must never raise into a flow
            with self._cond:
                self._n.failures += 1
            _diag.warning("chat: queueing %s failed: %s", what, self._describe(err))
            self._to_fallback(item, full=True)

    def _submit_card(self, card: RunCard, *, final: bool, start: bool) -> None:
        card = card.model_copy(deep=True)
        refused = False
        with self._cond:
            if self._closing:
                refused = True
            else:
                run = self._runs.get(card.run_id)
                if run is None:  # first card of this run, whichever method sent it
                    run = self._runs[card.run_id] = _Run(finished=final)
                    if len(self._ops) >= self.settings.max_queue:
                        run.failed = refused = True
                        self._n.overflow += 1
                    else:
                        self._ops.append(_Start(card))
                elif not run.finished:  # a card after finish is a caller bug: ignore it
                    run.pending, run.final, run.finished = card, final, final
                    self._dirty[card.run_id] = None
                self._cond.notify()
                self._ensure_worker()
        if refused:
            self._to_fallback(card, full=final or start)

    def _submit_note(self, note: StepNote) -> None:
        refused = False
        with self._cond:
            if self._closing:
                refused = True
            elif len(self._ops) >= self.settings.max_queue:
                refused = True
                self._n.overflow += 1
            else:
                self._ops.append(_Note(note))
                self._cond.notify()
                self._ensure_worker()
        if refused:
            self._to_fallback(note, full=True)

    def _ensure_worker(self) -> None:
        """Start the worker thread (called with the lock held)."""
        if self._thread is None:
            thread = threading.Thread(target=self._work, name="revive-chat-slack", daemon=True)
            thread.start()
            self._thread = thread

    def _begin_close(self) -> threading.Thread | None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            return self._thread

    def _abandon(self) -> None:
        """Stop the worker; whatever it did not send goes to the fallback now."""
        with self._cond:
            self._closing = self._abandoned = True
            left: list[_Work] = list(self._ops)
            self._ops.clear()
            for run_id in self._dirty:
                run = self._runs[run_id]
                if run.pending is not None:
                    left.append(_Update(run.pending, run.final))
                    run.pending = None
            self._dirty.clear()
            self._cond.notify_all()
        if left:
            _diag.warning(
                "chat: %d message(s) still queued for Slack at close; writing them to the log",
                len(left),
            )
        for work in left:
            self._fallback_work(work)

    # -- worker side ------------------------------------------------------------------------

    def _work(self) -> None:
        while (work := self._next()) is not None:
            try:
                self._do(work)
            except Exception as err:  # e.g. a template error: count it, show the message anyway
                with self._cond:
                    self._n.failures += 1
                _diag.warning("chat: sending %s failed: %s", _kind(work), self._describe(err))
                self._fallback_work(work)

    def _next(self) -> _Work | None:
        """The next thing to send, waiting as needed; None when the worker should stop."""
        interval = self.settings.min_update_interval_s
        with self._cond:
            while True:
                if self._abandoned:
                    return None
                if self._ops:
                    return self._ops.popleft()
                now = time.monotonic()
                wait: float | None = None
                ready: _Run | None = None
                for run_id in self._dirty:
                    run = self._runs[run_id]
                    due = run.last_write + interval
                    if self._closing or due <= now:
                        ready = run
                        del self._dirty[run_id]
                        break
                    wait = due - now if wait is None else min(wait, due - now)
                if ready is not None and ready.pending is not None:
                    card, ready.pending = ready.pending, None
                    return _Update(card, ready.final)
                if ready is None and self._closing:
                    return None
                if ready is None:
                    self._cond.wait(wait)

    def _do(self, work: _Work) -> None:
        if isinstance(work, _Start):
            self._post_card(work.card)
        elif isinstance(work, _Update):
            self._update_card(work.card, work.final)
        else:
            self._post_note(work.note)

    def _post_card(self, card: RunCard) -> None:
        answer = self._call(
            "chat.postMessage",
            card.run_id,
            self._client.chat_postMessage,
            channel=self.channel,
            **self._card_payload(card),
            unfurl_links=False,
            unfurl_media=False,
        )
        with self._cond:
            run = self._runs[card.run_id]
            run.last_write = time.monotonic()
            if answer is None:
                run.failed = True
            else:
                run.channel, run.ts = str(answer["channel"]), str(answer["ts"])
        if answer is None:
            self._to_fallback(card, full=True)

    def _update_card(self, card: RunCard, final: bool) -> None:
        with self._cond:
            run = self._runs[card.run_id]
            channel, ts = run.channel, run.ts
        if ts is None or channel is None:  # the living message was never posted
            self._to_fallback(card, full=final)
            return
        answer = self._call(
            "chat.update",
            card.run_id,
            self._client.chat_update,
            channel=channel,
            ts=ts,
            **self._card_payload(card),
        )
        with self._cond:
            run.last_write = time.monotonic()
        if answer is None:
            self._to_fallback(card, full=final)

    def _post_note(self, note: StepNote) -> None:
        with self._cond:
            run = self._runs.get(note.run_id)
            channel, ts = (run.channel, run.ts) if run else (None, None)
        if ts is None or channel is None:  # no living message to reply to
            self._to_fallback(note, full=True)
            return
        text = render_note(note, slack=True)
        answer = self._call(
            "chat.postMessage",
            note.run_id,
            self._client.chat_postMessage,
            channel=channel,
            thread_ts=ts,
            **self._payload(text, text),
            unfurl_links=False,
            unfurl_media=False,
        )
        if answer is None:
            self._to_fallback(note, full=True)

    @staticmethod
    def _payload(mrkdwn: str, summary: str) -> dict[str, Any]:
        return {"text": truncate(summary, MAX_TEXT_CHARS), "blocks": text_to_blocks(mrkdwn)}

    @staticmethod
    def _card_payload(card: RunCard) -> dict[str, Any]:
        """The living message; with Approve / Reject buttons while it waits at a gate."""
        summary = truncate(render_card_line(card, slack=True), MAX_TEXT_CHARS)
        mrkdwn = render_card(card, slack=True)
        if card.approval is None or card.final or not card.approval.buttons:
            return {"text": summary, "blocks": text_to_blocks(mrkdwn)}
        blocks = text_to_blocks(mrkdwn, max_blocks=MAX_BLOCKS - 1)
        return {"text": summary,
                "blocks": [*blocks, approval_buttons(card.run_id, card.approval.gate)]}

    def _call(
        self, method: str, run_id: str, fn: Callable[..., Any], **kwargs: Any
    ) -> dict[str, Any] | None:
        """One Slack call; its answer, or None after counting and reporting the failure."""
        with self._cond:
            if time.monotonic() < self._n.breaker_until:
                return None  # Slack is considered down: straight to the fallback
        try:
            data = fn(**kwargs).data
        except Exception as err:  # SlackApiError, timeouts, refused connections: all counted
            reason = self._describe(err)
        else:
            with self._cond:
                self._n.sent += 1
                self._n.consecutive = 0
            return dict(data) if isinstance(data, dict) else {}
        with self._cond:
            n = self._n
            n.failures += 1
            n.consecutive += 1
            opened = n.consecutive >= self.settings.breaker_threshold
            if opened:
                n.breaker_until = time.monotonic() + self.settings.breaker_cooldown_s
        _diag.warning(
            "chat: Slack %s for run %s failed (%s); writing to the log instead",
            method,
            run_id,
            reason,
        )
        if opened:
            _diag.warning(
                "chat: %d Slack failures in a row; using the log only for %.0f s",
                self.settings.breaker_threshold,
                self.settings.breaker_cooldown_s,
            )
        return None

    def _describe(self, err: Exception) -> str:
        return describe_error(err, self._secret)

    def _fallback_work(self, work: _Work) -> None:
        if isinstance(work, _Note):
            self._to_fallback(work.note, full=True)
        else:
            self._to_fallback(work.card, full=isinstance(work, _Start) or work.final)

    def _to_fallback(self, item: RunCard | StepNote, *, full: bool) -> None:
        with self._cond:
            self._n.fallbacks += 1
        if isinstance(item, StepNote):
            self.fallback.write_note(item)
        else:
            self.fallback.write_card(item, full=full)


def _kind(work: _Work) -> str:
    if isinstance(work, _Start):
        return "the run message"
    if isinstance(work, _Note):
        return "a step note"
    return "the final card" if work.final else "an update"
