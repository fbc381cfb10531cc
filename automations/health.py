"""What a load balancer, an orchestrator or a monitor asks a Hookline process: could it store
a webhook now, and is the work flowing (how many runs are due and how long the oldest has
waited)? The runner's state is added by the caller: only the process that started a runner
knows about it."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, literal, select, union_all

from .core import Core
from .models import Run, RunStatus
from .ttlcache import TtlCache

log = logging.getLogger("hookline.health")

WRITE_PROBE_TIMEOUT = 5.0
CHECK_EVERY = 1.0  # seconds a result is reused (the endpoint is public)
_ONE = select(literal(1))
# Due: queued runs whose time has come, and running runs whose lease expired (their worker
# is gone; taking back expired leases queues them again), due since the lease expired. One
# statement, each half on ix_runs_due (status, …); the running runs are few (claimed ones).
_DUE = union_all(
    select(func.count(), func.min(Run.next_attempt_at)).where(
        Run.status == RunStatus.QUEUED.value, Run.next_attempt_at <= bindparam("b_now")),
    select(func.count(), func.min(Run.lease_expires_at)).where(
        Run.status == RunStatus.RUNNING.value, Run.lease_expires_at < bindparam("b_now")),
)


@dataclass(frozen=True)
class Readiness:
    storing: bool  # a webhook arriving now would be stored and acknowledged
    runs_due: int | None  # due, not taken by a live runner: queued and due, or running past
    # an expired lease (their worker is gone); None: unknown
    oldest_due_seconds: float | None  # how long the longest-waiting of them has been due
    # (a run whose lease expired: since it expired)


def _probe(conn: Connection) -> None:
    """The write probe: a unit of the batch writer that writes nothing. It commits only if
    the writer thread is alive and its transaction reaches the database (on SQLite it holds
    the write lock, as storing a webhook needs; PostgreSQL opens it at the first statement)."""
    conn.execute(_ONE)


def readiness(core: Core) -> Readiness:
    """Never raises: a failure is logged here (its details stay out of the public answer)."""
    try:
        core.writer.submit(_probe, timeout=WRITE_PROBE_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - whatever stops the writer makes the server unready
        log.error("readiness: the writer could not commit: %s", exc)
        return Readiness(False, None, None)
    now = core.clock.now()
    try:
        with core.read_engine.connect() as conn:
            parts = conn.execute(_DUE, {"b_now": now}).all()
    except Exception as exc:  # noqa: BLE001 - storing works; only the figures are unknown
        log.error("readiness: counting the due runs failed: %s", exc)
        return Readiness(True, None, None)
    count = sum(n for n, _ in parts)
    oldest = min((since for _, since in parts if since is not None), default=None)
    waited = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return Readiness(True, int(count), round(waited, 3))


class ReadinessCheck:
    """:func:`readiness` at most once every CHECK_EVERY seconds, one check at a time: the
    endpoint needs no sign-in, and each check is a write transaction and a count of the due
    runs, which a flood of requests must not multiply. While a check runs (up to
    WRITE_PROBE_TIMEOUT when the database is stuck), other requests get the previous answer
    instead of each holding a request thread; only the very first one waits."""

    def __init__(self, core: Core) -> None:
        self._cache: TtlCache[None, Readiness] = TtlCache(lambda _keys: {None: readiness(core)},
                                                          lambda: CHECK_EVERY)

    def __call__(self) -> Readiness:
        result = self._cache.get(None)
        assert result is not None  # the loader always answers
        return result
