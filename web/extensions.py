"""Flask extensions, bound to the engine's metadata so both see one schema."""
from __future__ import annotations

from flask import Flask, Request, current_app
from flask.sessions import SecureCookieSessionInterface, SessionMixin
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


class SessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions, except on the inbound endpoint: senders never sign in, and
    verifying and re-signing a cookie is a good part of Flask's cost per webhook."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path.startswith("/hooks/"):
            return self.null_session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    app.session_interface = SessionInterface()
    db.init_app(app)
    csrf.init_app(app)
