"""One source of time for the engine, so tests can move it instead of sleeping."""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Clock:
    """Wall clock. Times are naive UTC everywhere in the database."""

    def now(self) -> datetime:
        return utcnow()


class FrozenClock(Clock):
    """A clock that only moves when told to (tests, replays of time-dependent logic)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or utcnow()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


system_clock = Clock()
