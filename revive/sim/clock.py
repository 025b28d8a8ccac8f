"""Virtual time for the simulator: a discrete-event queue plus fixed-rate tickers.

Runbooks wait for minutes of recovery (restarts, boots, copies); a drill or a test must
replay those minutes in milliseconds and get the same answer every time. So nothing here
reads the wall clock or sleeps: time only moves when a caller asks it to, and it moves by
jumping from one scheduled point to the next.

Two kinds of scheduled point exist:

* events, one-shot callbacks at an absolute time (an action finishing, a fault firing);
* tickers, callbacks at every multiple of a period (the load model steps every second).

At equal times events run before ticks, so a tick always sees the state the events at that
instant produced; events at equal times run in the order they were scheduled. A callback may
schedule more events (even at ``now``) but may not advance the clock itself.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["VirtualClock"]


@dataclass
class _Ticker:
    """A periodic callback; ``index * every`` is its next tick, kept integral to avoid drift."""

    callback: Callable[[float, float], None]
    every: float
    index: int
    last: float

    @property
    def due(self) -> float:
        return self.index * self.every


@dataclass(order=True)
class _Event:
    """A queued one-shot callback; ordered by time, then by scheduling sequence."""

    at: float
    seq: int
    callback: Callable[[], None] = field(compare=False)


class VirtualClock:
    """Deterministic virtual time in seconds from 0; advanced only by explicit calls."""

    def __init__(self) -> None:
        self._now = 0.0
        self._queue: list[_Event] = []
        self._live: dict[int, _Event] = {}
        self._seq = 0
        self._tickers: list[_Ticker] = []
        self._advancing = False

    @property
    def now(self) -> float:
        """Virtual seconds since the clock was created."""
        return self._now

    # --- scheduling -------------------------------------------------------------------------

    def schedule(self, at: float, callback: Callable[[], None]) -> int:
        """Run ``callback`` at absolute time ``at``; returns an id for ``cancel``.

        Scheduling in the past is a bug in the caller (the effect would be silently
        reordered), so it raises ValueError; ``at == now`` is allowed and runs on the next
        advance.
        """
        if not math.isfinite(at):
            raise ValueError(f"cannot schedule at non-finite time {at!r}")
        if at < self._now:
            raise ValueError(f"cannot schedule at {at} before now ({self._now})")
        self._seq += 1
        event = _Event(float(at), self._seq, callback)
        heapq.heappush(self._queue, event)
        self._live[event.seq] = event
        return event.seq

    def cancel(self, event_id: int) -> bool:
        """Forget a pending event; returns False if it already ran or was cancelled.

        The heap entry stays and is skipped when popped: cheaper than re-heapifying.
        """
        return self._live.pop(event_id, None) is not None

    def next_event_time(self) -> float | None:
        """When the earliest pending event (not tick) runs, or None if there is none."""
        self._drop_cancelled()
        return self._queue[0].at if self._queue else None

    def add_ticker(self, callback: Callable[[float, float], None], every: float) -> None:
        """Call ``callback(now, dt)`` at every multiple of ``every`` after the current time.

        ``dt`` is the time since the previous tick (or since registration for the first
        one), so an integrator registered mid-second still covers exactly the elapsed time.
        Tickers due at the same instant run in registration order.
        """
        if not (math.isfinite(every) and every > 0):
            raise ValueError(f"ticker period must be positive and finite, got {every!r}")
        index = math.floor(self._now / every) + 1
        while index * every <= self._now:  # float rounding at exact multiples
            index += 1
        self._tickers.append(_Ticker(callback, float(every), index, self._now))

    # --- advancing --------------------------------------------------------------------------

    def advance_to(self, t: float) -> None:
        """Run every event and tick due up to and including ``t``, then set ``now = t``.

        Time never moves backwards: ``t < now`` raises ValueError rather than being
        ignored, because a caller computing a past deadline has a bug worth seeing.
        """
        self._check_target(t)
        with self._advancing_guard():
            while self._step(t):
                pass
            self._now = float(t)

    def advance_by(self, dt: float) -> None:
        """Shorthand for ``advance_to(now + dt)``."""
        self.advance_to(self._now + dt)

    def advance_until(self, predicate: Callable[[], bool], *, limit: float) -> bool:
        """Advance one event or tick at a time until ``predicate()`` holds or ``limit``.

        ``limit`` is an absolute virtual time. The predicate is checked before moving and
        after every single event or tick, so the clock stops at the first instant it
        becomes true (other events at that same instant may still be pending). Returns
        whether it became true; on False the clock stands at ``limit``.
        """
        self._check_target(limit)
        if predicate():
            return True
        with self._advancing_guard():
            while self._step(limit):
                if predicate():
                    return True
            self._now = float(limit)
        return predicate()

    # --- internals --------------------------------------------------------------------------

    def _check_target(self, t: float) -> None:
        if not math.isfinite(t):
            raise ValueError(f"cannot advance to non-finite time {t!r}")
        if t < self._now:
            raise ValueError(f"time never moves backwards: asked for {t}, now is {self._now}")
        if self._advancing:
            raise RuntimeError("a clock callback may schedule events but not advance the clock")

    @contextmanager
    def _advancing_guard(self) -> Iterator[None]:
        """Mark the clock as advancing so a callback cannot re-enter it."""
        self._advancing = True
        try:
            yield
        finally:
            self._advancing = False

    def _drop_cancelled(self) -> None:
        while self._queue and self._queue[0].seq not in self._live:
            heapq.heappop(self._queue)

    def _step(self, upto: float) -> bool:
        """Run the single earliest due item at or before ``upto``; False if none is due."""
        self._drop_cancelled()
        event_at = self._queue[0].at if self._queue else math.inf
        ticker = min(self._tickers, key=lambda tk: tk.due, default=None)
        tick_at = ticker.due if ticker is not None else math.inf
        if event_at <= tick_at and event_at <= upto:
            event = heapq.heappop(self._queue)
            del self._live[event.seq]
            self._now = event.at
            event.callback()
            return True
        if ticker is not None and tick_at <= upto:
            self._now = tick_at
            dt = tick_at - ticker.last
            ticker.last = tick_at
            ticker.index += 1
            ticker.callback(tick_at, dt)
            return True
        return False
