"""Health checks, without signing in, for load balancers, orchestrators and monitors (as n8n
has them): ``/healthz`` says the process answers; ``/healthz/readiness`` says whether a
webhook sent now would be stored (503 if not), and how the runs flow. The runner's state is
reported but never makes the server unready: webhooks are stored without it and run once it
is back."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from automations import health

from .extensions import core

bp = Blueprint("health", __name__)


def _no_store(body: dict, status: int) -> ResponseReturnValue:
    resp = jsonify(body)
    resp.headers["Cache-Control"] = "no-store"
    return resp, status


@bp.get("/healthz")
def live() -> ResponseReturnValue:
    return _no_store({"status": "ok"}, 200)


@bp.get("/healthz/readiness")
def ready() -> ResponseReturnValue:
    check = current_app.extensions.get("hookline_readiness")
    if check is None:
        check = current_app.extensions.setdefault("hookline_readiness", health.ReadinessCheck(core()))
    state = check()
    runner = current_app.extensions.get("hookline_runner")
    return _no_store({
        "status": "ok" if state.storing else "unavailable",
        "database": "ok" if state.storing else "unavailable",
        "runner": runner.state if runner is not None else "off",  # off: another process runs them
        "runs_due": state.runs_due,
        "oldest_due_seconds": state.oldest_due_seconds,
    }, 200 if state.storing else 503)
