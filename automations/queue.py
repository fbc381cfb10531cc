"""The database as a queue: claiming due runs under a lease, and taking back expired leases.

Claiming is one atomic statement (``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)
RETURNING id``; SQLite serialises writers, PostgreSQL skips rows other workers hold), so
any number of workers can share the work without a run being claimed twice.
"""
from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.orm import Session

from . import sqlite_rows
from .models import Recipe, RecipeStatus, Run, RunStatus

QUEUED = RunStatus.QUEUED.value
RUNNING = RunStatus.RUNNING.value


def claim(session: Session, owner: str, limit: int, now: datetime, lease_seconds: float) -> list[int]:
    """Lease up to ``limit`` due runs to ``owner``; returns their ids, oldest due first. Commits."""
    ids = claim_in(session.connection(), owner, limit, now, lease_seconds)
    session.commit()
    return ids


def claim_in(conn: Connection, owner: str, limit: int, now: datetime, lease_seconds: float) -> list[int]:
    """The claim inside the caller's transaction (the batch writer's, or a session's
    connection); on SQLite through the cursor (sqlite_rows)."""
    if limit <= 0:
        return []
    params = {"b_owner": owner, "b_limit": limit, "b_now": now, "b_expires": now + timedelta(seconds=lease_seconds)}
    return sorted(row[0] for row in sqlite_rows.select_all(conn, _CLAIM, params))


# Built once (the dispatcher claims many times a second; building costs more than running).
_DUE = (
    select(Run.id)
    .where(Run.status == QUEUED, Run.next_attempt_at <= bindparam("b_now"))
    .order_by(Run.next_attempt_at, Run.id)
    .limit(bindparam("b_limit"))
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
_CLAIM = (
    update(Run)
    .where(Run.id.in_(_DUE))
    .values(status=RUNNING, lease_owner=bindparam("b_owner"), lease_expires_at=bindparam("b_expires"),
            attempt=Run.attempt + 1, started_at=func.coalesce(Run.started_at, bindparam("b_now")))
    .returning(Run.id)
    .execution_options(synchronize_session=False)
)


def _requeue(conn: Connection | Session, now: datetime, *where: Any, **values: Any) -> int:
    """Running runs matching ``where`` queued again, due ``now``, with no lease."""
    result = conn.execute(
        update(Run)
        .where(Run.status == RUNNING, *where)
        .values(status=QUEUED, lease_owner=None, lease_expires_at=None, next_attempt_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def recover_expired(conn: Connection | Session, now: datetime, keep: Collection[int] = ()) -> int:
    """Put runs whose worker vanished (lease expired) back in the queue. In the caller's
    transaction (a unit of the batch writer: ``partial(recover_expired, now=...)``).

    A live worker renews the leases of the runs it executes (:func:`renew`), so their leases
    do not expire; ``keep``: the runs the sweeping worker itself is executing, never taken
    back from under it even if a renewal came late (a paused process, a slow writer)."""
    where = [Run.lease_expires_at < now]
    if keep:
        where.append(Run.id.not_in(list(keep)))
    return _requeue(conn, now, *where)


def renew(conn: Connection | Session, owner: str, run_ids: Collection[int], now: datetime,
          lease_seconds: float) -> int:
    """Extend the leases of the runs ``owner`` is executing to ``now + lease_seconds``: one
    statement for all of them (the runner calls it every third of a lease, not per run).
    Only runs still running under ``owner``: one finished, released or taken back meanwhile
    is left alone. In the caller's transaction; returns how many were renewed."""
    if not run_ids:
        return 0
    result = conn.execute(
        update(Run)
        .where(Run.id.in_(list(run_ids)), Run.lease_owner == owner, Run.status == RUNNING)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def take_back(conn: Connection | Session, owner: str, now: datetime) -> int:
    """Queue again every run ``owner`` holds, now, without waiting for its leases to expire:
    for a worker known to be dead (``serve``'s runner child that exited). Its attempts
    count, as with an expired lease. In the caller's transaction."""
    return _requeue(conn, now, Run.lease_owner == owner)


def release(conn: Connection | Session, owner: str, run_ids: list[int], now: datetime) -> int:
    """Give back runs this worker claimed but will not start (graceful shutdown): their
    attempt is not counted. In the caller's transaction."""
    if not run_ids:
        return 0
    return _requeue(conn, now, Run.id.in_(run_ids), Run.lease_owner == owner, attempt=Run.attempt - 1)


def hold_if_paused(conn: Connection | Session, run_id: int) -> int:
    """A run that was in flight when its recipe was paused, and now waits for a retry, is held
    like the recipe's other queued runs, instead of going on at the broken receiver. A unit of
    the batch writer (in a partial), after the retry's own write."""
    return conn.execute(
        update(Run).where(Run.id == run_id, Run.status == QUEUED,
                          Run.recipe_id.in_(select(Recipe.id).where(Recipe.status == RecipeStatus.PAUSED.value)))
        .values(status=RunStatus.HELD.value).execution_options(synchronize_session=False)
    ).rowcount or 0


def release_orphans(conn: Connection | Session, owner: str, keep: Collection[int], now: datetime) -> int:
    """Runs leased to ``owner`` that it does not know it holds, queued again at once with the
    attempt not counted: a claim whose batch began but whose answer never came back (the
    database stalled past the caller's wait) leased them to a runner that never got their ids.
    ``keep``: the runs the runner does hold. In the caller's transaction."""
    where = [Run.lease_owner == owner]
    if keep:
        where.append(Run.id.not_in(list(keep)))
    return _requeue(conn, now, *where, attempt=Run.attempt - 1)
