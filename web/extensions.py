"""Flask extensions, bound to the engine's metadata so both see one schema."""
from __future__ import annotations

from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect

from automations.core import Core
from automations.models import Base

db = SQLAlchemy(model_class=Base)
csrf = CSRFProtect()


def core() -> Core:
    """The engine core of the running app (secrets, outbound client, clock, runner hooks)."""
    return current_app.extensions["hookline"]


def notify_runner() -> None:
    """Wake the in-process runner, if this process has one, so a new run starts at once."""
    runner = current_app.extensions.get("hookline_runner")
    if runner is not None:
        runner.notify()


def init_app(app: Flask) -> None:
    db.init_app(app)
    csrf.init_app(app)
