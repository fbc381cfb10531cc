"""Run history: a filtered, paginated list, one run with the request and every step, and
replays (one run, or every run matching a filter as a background job with a progress page).

Payloads are attacker-controlled; the templates only ever print them through autoescape.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from automations import bulk, history
from automations.history import RunFilter
from automations.models import Event, Recipe, Run, RunStatus

from .auth import requires
from .extensions import core, db, notify_runner, wake_runners

bp = Blueprint("runs", __name__, url_prefix="/runs")


TEXT_MAX = 200


def parse_utc(value: str | None) -> datetime | None:
    """A ``datetime-local`` value (no zone: UTC) → naive UTC; garbage → None."""
    try:
        when = datetime.fromisoformat((value or "").strip())
        when = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
    except (ValueError, OverflowError):
        return None
    return when.replace(microsecond=0)


def local_value(when: datetime) -> str:
    return when.isoformat(timespec="seconds" if when.second else "minutes")


def _filter(source: MultiDict[str, str] | None = None) -> tuple[RunFilter, dict[str, Any]]:
    """The list's filter from GET parameters (or a form); unknown values are ignored, not errors.

    ``args`` is the filter as URL parameters, for pager links and the bulk replay pages."""
    src = request.args if source is None else source
    status = src.get("status") or None
    if status not in {s.value for s in RunStatus}:
        status = None
    recipe_id = src.get("recipe", type=int)
    since, until = parse_utc(src.get("since")), parse_utc(src.get("until"))
    text = (src.get("text") or "").strip()[:TEXT_MAX] or None
    replays = src.get("replays") == "1"
    args = {k: v for k, v in (("status", status), ("recipe", recipe_id),
                              ("since", since and local_value(since)), ("until", until and local_value(until)),
                              ("text", text), ("replays", "1" if replays else None)) if v}
    return RunFilter(status=status, recipe_id=recipe_id, since=since, until=until, text=text,
                     replays=replays), args


@bp.get("/")
def index() -> str | Response:
    run_filter, args = _filter()
    asked = request.args.get("page", 1, type=int)
    page = db.paginate(history.runs_query(run_filter), page=max(asked, 1), error_out=False,
                       per_page=current_app.config["RUNS_PER_PAGE"], max_per_page=500)
    if asked < 1 or asked > max(page.pages, 1):
        # An old link or a hand-typed number: go to the nearest page, keeping the filters.
        nearest = min(max(asked, 1), max(page.pages, 1))
        return redirect(url_for(".index", **args, **({"page": nearest} if nearest > 1 else {})))
    recipes = db.session.scalars(select(Recipe).order_by(Recipe.name)).all()
    return render_template("runs/index.html", page=page, args=args, recipes=recipes,
                           statuses=[s.value for s in RunStatus], filtered=run_filter.is_set())


@bp.get("/bulk-replay")
@requires("editor")
def bulk_confirm() -> str | Response:
    """Confirmation: the exact count, frozen to the runs that exist now (``upto``)."""
    run_filter, args = _filter()
    if not run_filter.is_set():
        flash("Choose a filter first: bulk replay only runs again the runs matching a filter.", "error")
        return redirect(url_for(".index"))
    run_filter.max_id = db.session.scalar(select(func.max(Run.id))) or 0
    count = bulk.count_matching(db.session, run_filter)
    recipe = db.session.get(Recipe, run_filter.recipe_id) if run_filter.recipe_id else None
    return render_template("runs/bulk_confirm.html", count=count, args=args, upto=run_filter.max_id,
                           recipe=recipe)


@bp.post("/bulk-replay")
@requires("editor")
def bulk_start() -> Response:
    run_filter, args = _filter(request.form)
    if not run_filter.is_set():
        flash("Choose a filter first: bulk replay only runs again the runs matching a filter.", "error")
        return redirect(url_for(".index"))
    run_filter.max_id = request.form.get("upto", type=int)
    if run_filter.max_id is None:
        flash("The confirmation was incomplete; please confirm again.", "error")
        return redirect(url_for(".bulk_confirm", **args))
    job = bulk.start_replay(core(), run_filter, request.form.get("version") != "original",
                            notify=partial(wake_runners, current_app._get_current_object()))
    return redirect(url_for(".bulk_progress", job_id=job.id))


@bp.get("/bulk/<job_id>")
def bulk_progress(job_id: str) -> tuple[str, int]:
    job = bulk.get_job(job_id)
    return render_template("runs/bulk_progress.html", job=job, job_id=job_id), 200 if job else 404


def body_text(event: Event) -> str:
    """The body for reading: parsed JSON-like bodies indented, text as text."""
    if event.body_kind in ("json", "form", "multipart", "xml") and event.body is not None:
        return json.dumps(event.body, indent=2, ensure_ascii=False)
    if isinstance(event.body, str):
        return event.body
    if event.body_kind == "binary":
        return f"(binary body, {len(event.body_raw or b'')} bytes; not shown)"
    return ""


@bp.get("/<int:run_id>")
def detail(run_id: int) -> str:
    run = db.get_or_404(Run, run_id)
    replays = db.session.scalars(select(Run).where(Run.replay_of == run.id).order_by(Run.id)).all()
    return render_template("runs/detail.html", run=run, event=run.event, body=body_text(run.event),
                           replays=replays)


@bp.post("/<int:run_id>/replay")
@requires("editor")
def replay(run_id: int) -> Response:
    run = db.get_or_404(Run, run_id)
    as_now = request.form.get("version") != "original"
    try:
        new = history.replay(db.session, run, current_version=as_now, clock=core().clock)
    except ValueError as exc:
        db.session.rollback()
        flash(f"Cannot run again: {exc}.", "error")
        return redirect(url_for(".detail", run_id=run_id))
    notify_runner()
    held = " It is held because the recipe is paused." if new.status == RunStatus.HELD.value else ""
    flash(f"Run #{new.id} queued (again of #{run.id}).{held}", "success")
    return redirect(url_for(".detail", run_id=new.id))


@bp.post("/<int:run_id>/run-held")
@requires("editor")
def run_held(run_id: int) -> Response:
    run = db.get_or_404(Run, run_id)
    try:
        history.run_held(db.session, run, clock=core().clock)
    except ValueError as exc:
        db.session.rollback()
        flash(f"Cannot run this event now: {exc}.", "error")
    else:
        notify_runner()
        flash(f"Run #{run.id} queued.", "success")
    return redirect(url_for(".detail", run_id=run_id))
