"""Run history queries and replays, shared by the UI, the API and the CLI."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, Text, cast, func, or_, select
from sqlalchemy.orm import Session, selectinload

from .clock import Clock, system_clock
from .models import Event, Recipe, Run, RunStatus


@dataclass
class RunFilter:
    status: str | None = None
    recipe_id: int | None = None
    since: datetime | None = None    # created at or after (naive UTC)
    until: datetime | None = None    # created before (naive UTC)
    text: str | None = None          # the event's payload contains this, ignoring case
    replays: bool = False            # only runs that are a run again of another
    max_id: int | None = None        # runs that existed when a count was shown (bulk replay)

    def is_set(self) -> bool:
        return any((self.status, self.recipe_id, self.since, self.until, self.text, self.replays))


def payload_contains(text: str) -> ColumnElement[bool]:
    """The event's parsed body, as its stored JSON text, contains ``text`` (any case).

    Portable (SQLite and PostgreSQL): a LIKE over ``CAST(body AS TEXT)`` with ``%``, ``_``
    and the escape character escaped, so they match literally. Text bodies are stored as a
    JSON string, so the search also tries the text as JSON would escape it (quotes,
    backslashes, newlines, non-ASCII). Case folding is the database's: ASCII only on SQLite.
    A full scan of the matching runs' events: combine it with a recipe or a time range on
    large histories.
    """
    body = cast(Event.body, Text)
    escaped = json.dumps(text)[1:-1]  # what the JSON serializer stores for this text
    options = {text, escaped}
    return or_(*(body.icontains(t, autoescape=True) for t in sorted(options)))


def apply_filter(q: Select, f: RunFilter) -> Select:
    """Add the filter's conditions to a query over runs."""
    if f.status:
        q = q.where(Run.status == f.status)
    if f.recipe_id:
        q = q.where(Run.recipe_id == f.recipe_id)
    if f.since:
        q = q.where(Run.created_at >= f.since)
    if f.until:
        q = q.where(Run.created_at < f.until)
    if f.replays:
        q = q.where(Run.replay_of.is_not(None))
    if f.max_id is not None:
        q = q.where(Run.id <= f.max_id)
    if f.text:
        q = q.join(Event, Event.id == Run.event_id).where(payload_contains(f.text))
    return q


def runs_query(f: RunFilter) -> Select:
    """Newest first; the caller paginates."""
    return apply_filter(select(Run).options(selectinload(Run.recipe)), f).order_by(Run.id.desc())


def count_runs(session: Session, f: RunFilter) -> int:
    return session.scalar(apply_filter(select(func.count(Run.id)).select_from(Run), f)) or 0


def last_runs(session: Session, recipe_ids: list[int]) -> dict[int, Run]:
    """The newest run of each recipe, in one query (for the recipe list)."""
    newest = select(func.max(Run.id)).where(Run.recipe_id.in_(recipe_ids)).group_by(Run.recipe_id)
    return {r.recipe_id: r for r in session.scalars(select(Run).where(Run.id.in_(newest)))}


SAMPLE_CHOICES = 10
STRUCTURED_KINDS = ("json", "form", "multipart", "xml")


@dataclass(frozen=True)
class SampleChoice:
    """One of the recent events the recipe editor offers as its sample (no body: the list
    must not load ten bodies of up to MAX_BODY_BYTES each)."""

    id: int
    received_at: datetime
    body_kind: str
    size: int
    parse_failed: bool

    @property
    def structured(self) -> bool:
        """A body with fields to pick: what makes a useful sample."""
        return not self.parse_failed and self.body_kind in STRUCTURED_KINDS


def sample_choices(session: Session, recipe_id: int, limit: int = SAMPLE_CHOICES) -> list[SampleChoice]:
    """The recipe's newest events, newest first."""
    rows = session.execute(
        select(Event.id, Event.received_at, Event.body_kind, func.length(Event.body_raw), Event.parse_error)
        .where(Event.recipe_id == recipe_id).order_by(Event.id.desc()).limit(limit))
    return [SampleChoice(id=i, received_at=at, body_kind=kind, size=size or 0, parse_failed=error is not None)
            for i, at, kind, size, error in rows]


def sample_event(session: Session, recipe_id: int, choices: list[SampleChoice],
                 chosen: int | None = None) -> Event | None:
    """The event the editor shows fields and a preview for: the one chosen if it is still one
    of the recipe's recent events; else the newest with a structured body, since a test event
    that failed to parse (or a stray GET, or a health probe) would otherwise hide every usable
    sample; else the newest."""
    ids = [c.id for c in choices]
    if chosen not in ids:
        chosen = next((c.id for c in choices if c.structured), ids[0] if ids else None)
    if chosen is None:
        return None
    return session.scalar(select(Event).where(Event.id == chosen, Event.recipe_id == recipe_id))


def replay(session: Session, run: Run, *, current_version: bool = True,
           clock: Clock = system_clock) -> Run:
    """A new run of the same stored event, linked to the original. Commits.

    ``current_version`` runs the recipe as it is now (the usual wish after fixing a recipe);
    otherwise the version the original ran with.
    """
    recipe = session.get(Recipe, run.recipe_id) if run.recipe_id else None
    if recipe is None:
        raise ValueError("the recipe of this run was deleted")
    now = clock.now()
    new = Run(event_id=run.event_id, recipe_id=recipe.id,
              recipe_version=recipe.current_version if current_version else run.recipe_version,
              status=(RunStatus.HELD if recipe.is_paused else RunStatus.QUEUED).value,
              next_attempt_at=None if recipe.is_paused else now,
              created_at=now, outputs={}, replay_of=run.id)
    session.add(new)
    session.commit()
    return new


def run_held(session: Session, run: Run, clock: Clock = system_clock) -> Run:
    """Queue a held run (its recipe must be active again)."""
    if run.status != RunStatus.HELD.value:
        raise ValueError("only held runs can be released")
    recipe = session.get(Recipe, run.recipe_id) if run.recipe_id else None
    if recipe is None or recipe.is_paused:
        raise ValueError("resume the recipe first")
    run.status = RunStatus.QUEUED.value
    run.recipe_version = recipe.current_version
    run.next_attempt_at = clock.now()
    session.commit()
    return run
