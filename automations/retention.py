"""Keeping history fast: finished runs and their events older than the retention age are
deleted in small batches, each its own short transaction through the batch writer, so
ingestion never waits behind a long purge. Unfinished runs (queued, running, held) are
never purged: an acknowledged event always reaches a final state first."""
from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Connection, delete, exists, select

from .models import DedupeKey, Event, Run, RunStatus
from .writer import BatchWriter

FINAL = [s.value for s in RunStatus.final()]


def _purge_runs(conn: Connection, cutoff: datetime, batch: int) -> int:
    ids = select(Run.id).where(Run.status.in_(FINAL), Run.created_at < cutoff).limit(batch).scalar_subquery()
    return conn.execute(delete(Run).where(Run.id.in_(ids))).rowcount or 0


def _purge_events(conn: Connection, cutoff: datetime, batch: int) -> int:
    orphan = (select(Event.id).where(Event.received_at < cutoff, ~exists().where(Run.event_id == Event.id))
              .limit(batch).scalar_subquery())
    return conn.execute(delete(Event).where(Event.id.in_(orphan))).rowcount or 0


def _purge_keys(conn: Connection, now: datetime, batch: int) -> int:
    keys = select(DedupeKey.recipe_id, DedupeKey.key).where(DedupeKey.expires_at < now).limit(batch)
    rows = conn.execute(keys).all()
    for r in rows:
        conn.execute(delete(DedupeKey).where(DedupeKey.recipe_id == r.recipe_id, DedupeKey.key == r.key))
    return len(rows)


def purge(writer: BatchWriter, now: datetime, max_age_days: float, batch: int = 500,
          max_batches: int = 10_000) -> dict[str, int]:
    """Delete what is older than ``max_age_days``; returns counts. Bounded by ``max_batches``."""
    cutoff = now - timedelta(days=max_age_days)
    totals = {"runs": 0, "events": 0, "dedupe_keys": 0}
    for name, step in (("runs", partial(_purge_runs, cutoff=cutoff, batch=batch)),
                       ("events", partial(_purge_events, cutoff=cutoff, batch=batch)),
                       ("dedupe_keys", partial(_purge_keys, now=now, batch=batch))):
        for _ in range(max_batches):
            n = writer.submit(step)
            totals[name] += n
            if n < batch:
                break
    return totals
