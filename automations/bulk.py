"""Bulk replay: run again every run that matches a history filter, in a background thread.

The matching run ids are snapshotted when the job starts (so the count is stable and the
replays the job creates never match its own filter), then walked in id order in chunks.
Each chunk's replays are inserted in ONE transaction through the group-commit writer, reading
each recipe's state (deleted, paused, current version) in that same transaction: a run whose
recipe was deleted is skipped and counted; a paused recipe's replay is held, as a new event
would be. After each chunk the runner is woken so the replays start at once.

Progress lives in this (web) process's memory, in ``jobs``: a restart loses the progress
display, not the replays already committed (they are ordinary runs in the database, linked
to their originals through ``replay_of``). That is acceptable for now; a jobs table would
be needed to show progress across restarts or from another process.
"""
from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from .history import RunFilter, apply_filter, count_runs
from .models import Recipe, RecipeStatus, Run, RunStatus

if TYPE_CHECKING:
    from .core import Core

log = logging.getLogger("hookline.bulk")

CHUNK = 200
KEEP_JOBS = 50

RUNNING, FINISHED, FAILED = "running", "finished", "failed"


@dataclass
class BulkJob:
    id: str
    current_version: bool
    total: int | None = None      # known once the matching ids are snapshotted
    done: int = 0                 # replays created (queued or held)
    held: int = 0                 # of which held because their recipe is paused
    skipped: int = 0              # originals whose recipe was deleted (or that were purged)
    state: str = RUNNING
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    finished: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def processed(self) -> int:
        return self.done + self.skipped

    @property
    def percent(self) -> int:
        if self.state == FINISHED or not self.total:
            return 100 if self.state == FINISHED else 0
        return min(100, self.processed * 100 // self.total)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished or failed (tests, CLI)."""
        return self.finished.wait(timeout)


_lock = threading.Lock()
jobs: OrderedDict[str, BulkJob] = OrderedDict()


def get_job(job_id: str) -> BulkJob | None:
    """A consistent copy of the job's progress, or None when unknown (or forgotten)."""
    with _lock:
        job = jobs.get(job_id)
        return replace(job) if job is not None else None


def _update(job: BulkJob, **changes: Any) -> None:
    with _lock:
        for name, value in changes.items():
            setattr(job, name, value)


def _register(job: BulkJob) -> None:
    with _lock:
        jobs[job.id] = job
        while len(jobs) > KEEP_JOBS:
            oldest = next((k for k, j in jobs.items() if j.state != RUNNING), None)
            if oldest is None:
                break
            del jobs[oldest]


def count_matching(session: Session, f: RunFilter) -> int:
    return count_runs(session, f)


def matching_ids(session: Session, f: RunFilter) -> list[int]:
    return list(session.scalars(apply_filter(select(Run.id).select_from(Run), f).order_by(Run.id)))


_ORIGINALS = (
    select(Run.id, Run.event_id, Run.recipe_version, Recipe.id.label("recipe_id"),
           Recipe.status.label("recipe_status"), Recipe.current_version)
    .select_from(Run).outerjoin(Recipe, Recipe.id == Run.recipe_id)
)


def replay_chunk(conn: Connection, ids: list[int], current_version: bool,
                 now: datetime) -> tuple[int, int, int]:
    """Insert the replays of ``ids`` in the caller's transaction → (created, held, skipped)."""
    rows = conn.execute(_ORIGINALS.where(Run.id.in_(ids)).order_by(Run.id)).all()
    values = []
    for r in rows:
        if r.recipe_id is None:
            continue
        held = r.recipe_status == RecipeStatus.PAUSED.value
        values.append({
            "event_id": r.event_id, "recipe_id": r.recipe_id,
            "recipe_version": r.current_version if current_version else r.recipe_version,
            "status": (RunStatus.HELD if held else RunStatus.QUEUED).value,
            "next_attempt_at": None if held else now, "created_at": now,
            "attempt": 0, "step_index": 0, "outputs": {}, "replay_of": r.id,
        })
    if values:
        conn.execute(insert(Run), values)
    held_count = sum(1 for v in values if v["status"] == RunStatus.HELD.value)
    return len(values), held_count, len(ids) - len(values)


def replay_matching(core: Core, f: RunFilter, current_version: bool, job: BulkJob,
                    notify: Callable[[], None] | None = None) -> None:
    """Replay every run matching ``f`` (snapshotted now), updating ``job`` as chunks commit."""
    try:
        with core.read_session_factory() as s:
            ids = matching_ids(s, f)
        _update(job, total=len(ids))
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            now = core.clock.now()
            created, held, skipped = core.writer.submit(
                lambda conn, chunk=chunk, now=now: replay_chunk(conn, chunk, current_version, now))
            _update(job, done=job.done + created, held=job.held + held, skipped=job.skipped + skipped)
            if notify is not None and created:
                notify()
    except Exception as exc:  # shown on the progress page; the chunks committed stay
        log.exception("bulk replay %s failed", job.id)
        _update(job, state=FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=core.clock.now())
    else:
        _update(job, state=FINISHED, finished_at=core.clock.now())
    finally:
        job.finished.set()


def start_replay(core: Core, f: RunFilter, current_version: bool,
                 notify: Callable[[], None] | None = None) -> BulkJob:
    """Register a job and run it in a background thread; returns at once."""
    job = BulkJob(id=secrets.token_hex(8), current_version=current_version, started_at=core.clock.now())
    _register(job)
    threading.Thread(target=replay_matching, args=(core, f, current_version, job, notify),
                     name=f"hookline-bulk-{job.id}", daemon=True).start()
    return job
