"""Diagnostic only: measure who holds Hookline's in-process SQLite write lock, and for how long.

Loaded by Python at start-up when this folder is on PYTHONPATH (``bench/e2e.py --lock-probe``
does that for the server only). It swaps ``threading`` inside ``automations.db`` for a shim
whose ``Lock()`` records, per caller (the first project frame outside automations/db.py at
acquire time), how many times the lock was taken, the time spent waiting for it and the time
it was held (wall clock, and CPU time of the holding thread: the difference is time the
holder spent waiting for the GIL or for I/O while holding the lock). Written as JSON to $HOOKLINE_BENCH_LOCKSTATS at exit. Nothing else changes.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time

_OUT = os.environ.get("HOOKLINE_BENCH_LOCKSTATS")
_PROJECT = ("/automations/", "/web/", "/connectors/")


class _Stats:
    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.by_caller: dict[str, list[float]] = {}  # caller -> [count, wait_s, hold_s, max_hold_s, cpu_s]
        self.t0 = time.perf_counter()

    def add(self, caller: str, wait: float, hold: float, cpu: float) -> None:
        with self.guard:
            row = self.by_caller.setdefault(caller, [0, 0.0, 0.0, 0.0, 0.0])
            row[4] += cpu
            row[0] += 1
            row[1] += wait
            row[2] += hold
            row[3] = max(row[3], hold)

    def dump(self) -> None:
        if not _OUT:
            return
        elapsed = time.perf_counter() - self.t0
        rows = {k: {"count": int(v[0]), "wait_s": v[1], "hold_s": v[2], "max_hold_ms": v[3] * 1000,
                    "mean_hold_ms": v[2] / v[0] * 1000 if v[0] else 0.0,
                    "cpu_while_held_s": v[4]}
                for k, v in self.by_caller.items()}
        with open(_OUT, "w") as fh:
            json.dump({"elapsed_s": elapsed, "callers": rows}, fh, indent=1)


_stats = _Stats()
atexit.register(_stats.dump)


def _caller() -> str:
    f = sys._getframe(2)
    while f is not None:
        name = f.f_code.co_filename
        if any(p in name for p in _PROJECT) and not name.endswith("automations/db.py"):
            short = name[name.rfind("/", 0, name.rfind("/")) + 1:]
            return f"{f.f_code.co_name} ({short}:{f.f_lineno})"
        f = f.f_back
    return "?"


class _TimedLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        caller = _caller()
        t0 = time.perf_counter()
        ok = self._lock.acquire(blocking, timeout)
        if ok:
            t1 = time.perf_counter()
            self._local.info = (caller, t1 - t0, t1, time.thread_time())
        return ok

    def release(self) -> None:
        info = getattr(self._local, "info", None)
        self._lock.release()
        if info is not None:
            caller, wait, t1, c1 = info
            self._local.info = None
            _stats.add(caller, wait, time.perf_counter() - t1, time.thread_time() - c1)

    def locked(self) -> bool:
        return self._lock.locked()

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


class _ThreadingShim:
    def __getattr__(self, name: str) -> object:
        return getattr(threading, name)

    @staticmethod
    def Lock() -> _TimedLock:
        return _TimedLock()


def _install() -> None:
    if not _OUT:
        return
    try:
        from automations import db
    except Exception as exc:  # noqa: BLE001 - not a Hookline process, or it does not import: stay out of the way
        print(f"lockprobe: not installed ({exc})", file=sys.stderr)
        return
    db.threading = _ThreadingShim()  # type: ignore[assignment]
    # SIGTERM makes waitress raise SystemExit in the main thread, so atexit runs.


_install()
