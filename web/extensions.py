"""Flask extensions, bound to the engine's metadata so both see one schema."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, has_request_context, request
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSession
from flask_wtf import CSRFProtect

from automations.core import Core
from automations.db import for_reading
from automations.models import Base

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestSession(FlaskSession):
    """A page requested with a safe method only reads, so its session reads a snapshot
    without the writer lock (on SQLite): otherwise every page view held the lock for as long
    as it took to render, and webhooks waited behind someone browsing the run history."""

    def get_bind(self, mapper: Any = None, clause: Any = None,
                 bind: sa.Engine | sa.Connection | None = None, **kwargs: Any) -> sa.Engine | sa.Connection:
        engine = super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)
        if isinstance(engine, sa.Engine) and has_request_context() and request.method in SAFE_METHODS:
            return for_reading(engine)
        return engine


db = SQLAlchemy(model_class=Base, session_options={"class_": RequestSession})
csrf = CSRFProtect()


def core() -> Core:
    """The engine core of the running app (secrets, outbound client, clock, runner hooks)."""
    return current_app.extensions["hookline"]


def wake_runners(app: Flask) -> None:
    """Runs were just committed: start them at once, not at a poll. A process with a runner of
    its own (or a runner child) wakes it; one without (``serve --no-worker``, gunicorn) wakes
    the workers listening on PostgreSQL. Not both: ``serve`` on PostgreSQL spent 8-14 % more
    CPU and doubled its ack p99 at 400 webhooks/s sending NOTIFYs its own runner did not need
    (bench/README.md, "sixteenth session"); other workers beside it find the rest by polling."""
    runner = app.extensions.get("hookline_runner")
    if runner is not None:
        runner.notify()
    else:
        app.extensions["hookline"].announce_runs()


def notify_runner() -> None:
    wake_runners(current_app)


def init_app(app: Flask) -> None:
    db.init_app(app)
    csrf.init_app(app)
