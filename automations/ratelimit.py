"""Token buckets for the inbound endpoint: one per inbound URL (a runaway or hostile sender
cannot flood the queue) and one per client address for requests to unknown URLs (token
guessing). In memory, per process: limits are per server process, which is what protects
that process; the keys kept are bounded so an address flood cannot grow memory."""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class RateLimiter:
    def __init__(self, rate: float, burst: float, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate          # tokens per second; <= 0 disables the limiter
        self.burst = max(burst, 1.0)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> float:
        """0 when allowed (a token is spent); otherwise the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


def retry_after_header(wait: float) -> str:
    return str(max(1, math.ceil(wait)))
