"""Run progress as rendered text in the log (and optionally on a terminal).

What a person sees when Slack is not configured, and where ``SlackSink`` writes every
message it could not deliver, so nothing a person should see is lost while Slack is down.
Writing to a log never blocks a flow, so this sink needs no worker thread: only the merging
of updates that keeps a fast run from flooding the log.
"""

from __future__ import annotations

import logging
import threading
import time

from rich.console import Console

from revive.chat.models import RunCard, RunStatus, StepNote
from revive.chat.text import render_card, render_card_line, render_note

__all__ = ["LOGGER_NAME", "ConsoleSink"]

LOGGER_NAME = "revive.chat"


def _level(card: RunCard) -> int:
    failed = RunStatus(card.status) in (RunStatus.FAILED, RunStatus.ABORTED)
    return logging.WARNING if failed else logging.INFO


class ConsoleSink:
    """Rendered text to the ``revive.chat`` logger and, optionally, a Rich console.

    Used when Slack is not configured and as ``SlackSink``'s fallback. ``start`` and
    ``finish`` write the whole card; updates write one line each, at most one per run per
    ``min_update_interval_s`` (the newest card wins; ``aclose`` writes what is held back).
    The ``write_*`` methods write at once and are what ``SlackSink``'s worker calls.
    """

    def __init__(
        self,
        *,
        logger: logging.Logger | None = None,
        console: Console | None = None,
        min_update_interval_s: float = 1.0,
    ) -> None:
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.console = console
        self.min_update_interval_s = min_update_interval_s
        self.lines_written = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._last_update: dict[str, float] = {}
        self._held: dict[str, RunCard] = {}

    # -- immediate writes (thread-safe) ---------------------------------------------------

    def write(self, text: str, level: int = logging.INFO) -> None:
        """One message to the logger and the console; never raises."""
        self.logger.log(level, "%s", text)
        if self.console is not None:
            try:
                self.console.print(text, markup=False, highlight=False, emoji=False)
            except Exception as err:  # a closed or broken terminal must not stop a run
                self._error("console output failed", err)
        with self._lock:
            self.lines_written += 1

    def write_card(self, card: RunCard, *, full: bool = True) -> None:
        """The whole card (``full``) or its one-line summary, written now."""
        try:
            text = render_card(card) if full else render_card_line(card)
        except Exception as err:  # a broken template must not hide the progress itself
            self._error("rendering the run card failed", err)
            text = card.model_dump_json()
        self.write(text, _level(card))

    def write_note(self, note: StepNote) -> None:
        """A step note, written now."""
        try:
            text = f"[run {note.run_id}] {render_note(note)}"
        except Exception as err:  # as in write_card
            self._error("rendering the step note failed", err)
            text = note.model_dump_json()
        self.write(text, logging.WARNING if note.ok is False else logging.INFO)

    def _error(self, what: str, err: Exception) -> None:
        with self._lock:
            self.errors += 1
        self.logger.warning("chat: %s: %s: %s", what, type(err).__name__, err)

    # -- ChatSink -------------------------------------------------------------------------

    async def start(self, card: RunCard) -> None:
        with self._lock:
            self._last_update[card.run_id] = time.monotonic()
            self._held.pop(card.run_id, None)
        self.write_card(card, full=True)

    async def update(self, card: RunCard) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_update.get(card.run_id)
            if last is not None and now - last < self.min_update_interval_s:
                self._held[card.run_id] = card.model_copy(deep=True)
                return
            self._last_update[card.run_id] = now
            self._held.pop(card.run_id, None)
        self.write_card(card, full=False)

    async def note(self, note: StepNote) -> None:
        self.write_note(note)

    async def finish(self, card: RunCard) -> None:
        with self._lock:
            self._held.pop(card.run_id, None)
            self._last_update[card.run_id] = time.monotonic()
        self.write_card(card, full=True)

    async def aclose(self) -> None:
        with self._lock:
            held = list(self._held.values())
            self._held.clear()
        for card in held:
            self.write_card(card, full=False)
