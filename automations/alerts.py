"""Telling people when it matters: when a run goes dead the recipe's alert step runs (any
action: a chat message, an email…), and a recipe whose last N finished runs are all dead is
paused so it stops hammering a broken receiver. Paused recipes hold their events, so
resuming loses nothing."""
from __future__ import annotations

import logging
import time
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection as DBConnection
from sqlalchemy import select, update

from connectors.base import ActionContext, ConnectorError, RetryableError
from connectors.registry import ACTIONS

from . import connections as connections_mod
from . import recipes as recipes_mod
from .clock import utcnow
from .core import Core
from .models import Connection, Recipe, RecipeStatus, Run, RunStatus
from .redact import redact_values
from .templating import TemplateError, render_inputs

log = logging.getLogger("hookline.alerts")

DEFAULT_PAUSE_AFTER_DEAD = 10
# An alert is retried in place a few times (it runs once a run is dead, in that run's thread),
# honouring the receiver's Retry-After up to ALERT_MAX_WAIT seconds per wait.
ALERT_ATTEMPTS = 3
ALERT_MAX_WAIT = 10.0
# Filtered runs are not in it: they never reached the step that is failing, so they neither
# continue nor break a streak of dead runs (a recipe filtering most events must still pause).
_FINISHED = [RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.DEAD.value]


def after_dead(core: Core, run_id: int, recipe_id: int | None, settings: dict[str, Any], error: str) -> None:
    """Called once a run has been recorded as dead. Never raises: an alert that fails is logged."""
    if recipe_id is None:
        return
    try:
        paused, name = _maybe_pause(core, recipe_id, settings)
        alert = settings.get("alert")
        if alert:
            _send(core, alert, {"recipe": {"id": recipe_id, "name": name}, "run": {"id": run_id},
                                "error": error, "paused": paused})
    except Exception:
        log.exception("alert for dead run %s failed", run_id)


def _maybe_pause(core: Core, recipe_id: int, settings: dict[str, Any]) -> tuple[bool, str]:
    limit = settings.get("pause_after_dead")
    limit = DEFAULT_PAUSE_AFTER_DEAD if limit in (None, "") else int(limit)
    with core.read_engine.connect() as conn:
        row = conn.execute(select(Recipe.name, Recipe.updated_at).where(Recipe.id == recipe_id)).first()
        name = row.name if row else f"recipe {recipe_id}"
        # Only runs finished since the recipe last changed (a resume, an edit): after a resume,
        # one more dead run must not pause it again on the strength of the runs before.
        since = [Run.finished_at > row.updated_at] if row and row.updated_at else []
        last = conn.scalars(select(Run.status).where(Run.recipe_id == recipe_id, Run.status.in_(_FINISHED), *since)
                            .order_by(Run.finished_at.desc(), Run.id.desc()).limit(max(limit, 1))).all()
    if limit <= 0 or len(last) < limit or any(s != RunStatus.DEAD.value for s in last):
        return False, name
    reason = f"paused automatically: the last {limit} runs all went dead"
    paused = core.writer.submit(partial(_pause_if_active, recipe_id=recipe_id, reason=reason))
    if paused:
        log.warning("recipe %s (%s) %s", recipe_id, name, reason)
    return paused, name


def _pause_if_active(conn: DBConnection, recipe_id: int, reason: str) -> bool:
    """A unit of the batch writer."""
    stmt = (update(Recipe).where(Recipe.id == recipe_id, Recipe.status == RecipeStatus.ACTIVE.value)
            .values(status=RecipeStatus.PAUSED.value, status_reason=reason, updated_at=utcnow()))
    if conn.execute(stmt).rowcount != 1:
        return False
    conn.execute(recipes_mod.hold_queued(recipe_id))  # its retries stop too, not only new events
    return True


def _send(core: Core, alert: dict[str, Any], context: dict[str, Any]) -> None:
    action = ACTIONS[alert["action"]]
    with core.read_engine.connect() as conn:
        row = (conn.execute(select(Connection.settings, Connection.secret_blob)
                            .where(Connection.id == alert.get("connection"))).first()
               if alert.get("connection") else None)
    inputs = render_inputs(action.fields, alert.get("inputs") or {}, context)
    ctx = ActionContext(inputs=inputs, credentials=connections_mod.credentials_for(core.secret_box, row),
                        http=core.http, idempotency_key=f"hookline-alert-{context['run']['id']}")
    for attempt in range(1, ALERT_ATTEMPTS + 1):
        try:
            action.run(ctx)
            return
        except RetryableError as exc:  # Slack's 429, a mail server's 4xx: the alert matters most then
            if attempt == ALERT_ATTEMPTS:
                _not_delivered(core, row, context, exc)
                return
            time.sleep(min(_seconds(exc.retry_after) or 2.0 ** attempt, ALERT_MAX_WAIT))
        except (ConnectorError, TemplateError) as exc:
            _not_delivered(core, row, context, exc)
            return


def _seconds(retry_after: Any) -> float | None:
    if isinstance(retry_after, datetime):
        return max((retry_after - datetime.now(retry_after.tzinfo)).total_seconds(), 0.0)
    return float(retry_after) if retry_after is not None else None


def _not_delivered(core: Core, row: Any, context: dict[str, Any], exc: Exception) -> None:
    reason = redact_values(str(exc), connections_mod.secret_values(core.secret_box, row))  # it may echo secrets
    log.warning("alert for run %s not delivered: %s", context["run"]["id"], reason)
