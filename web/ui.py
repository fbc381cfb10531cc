"""The front page and what every page's templates share: status badges, relative times,
pretty-printed payloads and the public inbound URL of a recipe."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import Blueprint, current_app, redirect, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from automations.models import Recipe

from .extensions import core
from .hooks import hook_path

bp = Blueprint("ui", __name__)


@bp.route("/")
def index() -> Response:
    return redirect(url_for("recipes.index"))


@bp.app_template_global()
def inbound_url(recipe: Recipe) -> str:
    """What a sender posts to: the configured public base plus the hook's path."""
    return current_app.config["PUBLIC_URL"] + hook_path(recipe.token)


@bp.app_template_filter("badge")
def badge(status: str | None) -> Markup:
    status = status or "unknown"
    return Markup('<span class="badge badge-{0}">{0}</span>').format(status)


@bp.app_template_filter("reltime")
def reltime(when: datetime | None) -> Markup:
    """"3 min ago", with the exact UTC time on hover."""
    if when is None:
        return Markup('<span class="muted">—</span>')
    return Markup('<time datetime="{0}Z" title="{1} UTC">{2}</time>').format(
        when.isoformat(timespec="seconds"), when.strftime("%Y-%m-%d %H:%M:%S"), ago(when))


def ago(when: datetime, now: datetime | None = None) -> str:
    seconds = int(((now or core().clock.now()) - when).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size or unit == "s":
            text = f"{seconds // size} {unit}"
            break
    if seconds < 5:
        return "just now"
    return f"in {text}" if future else f"{text} ago"


@bp.app_template_filter("ago")
def ago_text(when: datetime) -> str:
    """"3 min ago" as plain text, where markup cannot go (an <option>)."""
    return ago(when)


@bp.app_template_filter("waiting_note")
def waiting_note(run: Any) -> str:
    """What a queued run waits for, for the run list: a retry after a failed attempt (the
    run has an error) or the end of a "Delay" step; "" for a run simply waiting its turn (a new
    one is due from the moment it is stored)."""
    if run.status != "queued" or run.next_attempt_at is None:
        return ""
    ahead = (run.next_attempt_at - core().clock.now()).total_seconds()
    what = "retry" if run.error else "resumes"
    if ahead <= 0:
        return "retry due now" if run.error else ""
    return f"{what} in a few seconds" if ahead < 5 else f"{what} {ago(run.next_attempt_at)}"


@bp.app_template_filter("one_line")
def one_line(text: str | None, limit: int = 100) -> str:
    """The first line of a message, cut to ``limit`` characters (the whole on hover)."""
    line = next((part.strip() for part in (text or "").splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"


@bp.app_template_filter("duration")
def duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


@bp.app_template_filter("pretty")
def pretty(value: Any) -> str:
    """JSON indented for reading; strings as they are."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


@bp.app_template_filter("size")
def size(count: int | None) -> str:
    count = count or 0
    for unit in ("bytes", "KB", "MB"):
        if count < 1024 or unit == "MB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)
