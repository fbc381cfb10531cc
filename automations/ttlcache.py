"""Values read from the database at most once per time-to-live, by one thread at a time.

Recipe settings, connections and the readiness check are each needed far more often than
they change. When a value is out of date, one thread re-reads it; the others go on with the
value they have (a moment older than the TTL) instead of each reading it too. 32 threads
finding a value stale together each took a pooled SQLite connection, and each connection
keeps a page cache of up to 2 MiB: the runner child grew by 14 MiB over 55,000 runs. A
thread with nothing cached waits for the one reading.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """``load(keys)`` returns the values of the keys that exist; a key it leaves out is
    dropped (a deleted row). ``ttl`` is called at each lookup, so it can follow a setting."""

    def __init__(self, load: Callable[[list[K]], dict[K, V]], ttl: Callable[[], float]) -> None:
        self._load = load
        self._ttl = ttl
        self._hits: dict[K, tuple[V, float]] = {}
        self._reading = threading.Lock()

    def get_many(self, keys: Iterable[K]) -> dict[K, V]:
        wanted = list(keys)
        stale = self._stale(wanted)
        if stale and self._reading.acquire(blocking=not all(k in self._hits for k in stale)):
            try:
                stale = self._stale(wanted)  # what no other thread read meanwhile
                if stale:
                    found = self._load(stale)
                    now = time.monotonic()
                    for k in stale:
                        if k in found:
                            self._hits[k] = (found[k], now)
                        else:
                            self._hits.pop(k, None)
            finally:
                self._reading.release()
        return {k: hit[0] for k in wanted if (hit := self._hits.get(k)) is not None}

    def get(self, key: K) -> V | None:
        hit = self._hits.get(key)
        if hit is not None and time.monotonic() - hit[1] < self._ttl():
            return hit[0]  # the common case (every webhook asks for its recipe's settings): no lists
        return self.get_many([key]).get(key)

    def forget(self, key: K) -> None:
        """Read it again at the next lookup (it was changed here)."""
        self._hits.pop(key, None)

    def _stale(self, keys: list[K]) -> list[K]:
        now, ttl = time.monotonic(), self._ttl()
        return [k for k in keys if (hit := self._hits.get(k)) is None or now - hit[1] >= ttl]
