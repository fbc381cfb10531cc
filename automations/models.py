"""Database schema. The database is the queue: events, runs and step records live here.

Plain SQLAlchemy 2.0 declarative models so the engine never needs Flask; the web layer
binds Flask-SQLAlchemy to the same metadata (``SQLAlchemy(model_class=Base)``).
Times are naive UTC.
"""
from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .clock import utcnow

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# An id is never given twice. Without AUTOINCREMENT, SQLite hands out the highest id + 1, so
# deleting the newest recipe (or connection, user, run…) gave its id to the next one: that
# one then ran the deleted recipe's cached definition, old versions pointed at a stranger's
# credentials, and links and sessions naming the old id reached the new row. PostgreSQL's
# identities never go back. Databases made before are upgraded at start (automations.schema).
NEVER_REUSED = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    pass


class RunStatus(str, enum.Enum):
    """Persisted as its string value."""

    HELD = "held"            # recipe paused when the event arrived; run it from history later
    QUEUED = "queued"        # due now or at next_attempt_at (first attempt or a scheduled retry)
    RUNNING = "running"      # claimed by a worker holding a lease
    SUCCEEDED = "succeeded"
    FILTERED = "filtered"    # an "Only continue if" step stopped it (error says which); nothing failed
    FAILED = "failed"        # permanent failure: bad input, 4xx, mapping error, bug
    DEAD = "dead"            # retryable failures exhausted the retry policy
    REJECTED = "rejected"    # the request failed verification; never runs

    @classmethod
    def final(cls) -> tuple[RunStatus, ...]:
        return (cls.SUCCEEDED, cls.FILTERED, cls.FAILED, cls.DEAD, cls.REJECTED)


class RecipeStatus(str, enum.Enum):
    ACTIVE = "active"
    PAUSED = "paused"


class Connection(Base):
    """Credentials stored once and chosen by recipes. ``secret_blob`` is Fernet-encrypted JSON."""

    __tablename__ = "connections"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(64))  # a credential type key from connectors.registry
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # non-secret fields
    secret_blob: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Recipe(Base):
    """A named inbound URL plus its current definition (kept as immutable versions)."""

    __tablename__ = "recipes"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=RecipeStatus.ACTIVE.value)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    versions: Mapped[list[RecipeVersion]] = relationship(
        back_populates="recipe", cascade="all, delete-orphan", order_by="RecipeVersion.version"
    )

    @property
    def is_paused(self) -> bool:
        return self.status == RecipeStatus.PAUSED.value


class RecipeVersion(Base):
    """An immutable snapshot of a recipe's definition; runs point at the version they ran with.

    ``definition`` = {"fields": [{"name", "path"}], "steps": [{"key", "name", "action",
    "connection_id", "inputs": {name: template}}], "settings": {...}}.
    """

    __tablename__ = "recipe_versions"
    __table_args__ = (UniqueConstraint("recipe_id", "version"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    recipe_id: Mapped[int] = mapped_column(ForeignKey("recipes.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    recipe: Mapped[Recipe] = relationship(back_populates="versions")


class Event(Base):
    """One inbound request exactly as received (raw bytes kept) plus its parsed body."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_recipe_received", "recipe_id", "received_at"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    recipe_id: Mapped[int | None] = mapped_column(
        ForeignKey("recipes.id", ondelete="SET NULL"), nullable=True
    )
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    method: Mapped[str] = mapped_column(String(10))
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    query: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    remote_addr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    content_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    body_raw: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    body_kind: Mapped[str] = mapped_column(String(16), default="empty")  # json|form|multipart|xml|text|binary|empty
    body: Mapped[Any] = mapped_column(JSON, nullable=True)  # parsed body (None when not parseable)
    parse_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Run(Base):
    """One execution of a recipe version for an event; the unit the dispatcher claims."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_due", "status", "next_attempt_at"),
        Index("ix_runs_recipe_created", "recipe_id", "created_at"),
        Index("ix_runs_created", "created_at"),
        # Deleting an event or a run looks up the runs that reference it (ON DELETE): without
        # these, each row a retention purge deleted scanned every run (23 s per 500 on PostgreSQL).
        Index("ix_runs_event", "event_id"),
        Index("ix_runs_replay_of", "replay_of"),
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    recipe_id: Mapped[int | None] = mapped_column(
        ForeignKey("recipes.id", ondelete="SET NULL"), nullable=True
    )
    recipe_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED.value)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # attempts started so far
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    step_index: Mapped[int] = mapped_column(Integer, default=0)  # first step not yet succeeded
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # outputs of succeeded steps
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    replay_of: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)

    event: Mapped[Event] = relationship()
    recipe: Mapped[Recipe | None] = relationship()
    steps: Mapped[list[StepRun]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="StepRun.id"
    )


class StepRun(Base):
    """What one attempt of one step sent and got back."""

    __tablename__ = "step_runs"
    __table_args__ = (Index("ix_step_runs_run", "run_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_key: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # succeeded | failed | retrying | skipped (its "only run if")
    input: Mapped[Any] = mapped_column(JSON, nullable=True)  # rendered inputs, secrets redacted
    request: Mapped[Any] = mapped_column(JSON, nullable=True)  # what went over the wire, redacted
    response: Mapped[Any] = mapped_column(JSON, nullable=True)  # status, headers, truncated body
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)

    run: Mapped[Run] = relationship(back_populates="steps")


class DedupeKey(Base):
    """A sender's delivery id seen for a recipe, and the run it created, until it expires."""

    __tablename__ = "dedupe_keys"

    recipe_id: Mapped[int] = mapped_column(ForeignKey("recipes.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    run_id: Mapped[int] = mapped_column(BigId)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class User(Base):
    """Someone who may sign in to the web UI. ``session_version`` changes on logout (and on a
    password change) so every session cookie issued before stops working."""

    __tablename__ = "users"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stored lower-cased
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # admin | editor | viewer
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Setting(Base):
    """Small key/value store for server-wide state (schema version, etc.)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


__all__ = [
    "Base", "Connection", "DedupeKey", "Event", "Recipe", "RecipeStatus", "RecipeVersion", "Run",
    "RunStatus", "Setting", "StepRun", "User"
]
