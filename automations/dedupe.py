"""Dropping the duplicates senders send. Stripe, GitHub and Standard Webhooks senders
retry on timeouts and redeliver by hand; each delivery carries an id (``$.id``,
``X-GitHub-Delivery``, ``webhook-id``). A recipe may name where that id is; a repeat within
the window gets the first run's id and creates no run.

Keys are claimed inside the same transaction that stores the event, so concurrent
repeats serialise on the key's primary key: exactly one run, whatever the concurrency.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select

from .mapping import compile_path, validate_path
from .models import DedupeKey

DEFAULT_WINDOW = 3 * 24 * 3600  # Stripe retries for up to three days
MAX_WINDOW = 90 * 24 * 3600


@dataclass(frozen=True)
class DedupeSpec:
    header: str | None
    path: str | None
    window_seconds: int

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None) -> DedupeSpec | None:
        cfg = (settings or {}).get("dedupe") or {}
        header = (cfg.get("header") or "").strip().lower() or None
        path = (cfg.get("path") or "").strip() or None
        if not header and not path:
            return None
        return cls(header, path, int(cfg.get("window_seconds") or DEFAULT_WINDOW))

    def key_for(self, headers: dict[str, Any], body: Any) -> str | None:
        """The delivery id of this request, or None (then it is never a duplicate)."""
        if self.header:
            value = headers.get(self.header)
        else:
            matches = [m.value for m in compile_path(self.path or "$").find(body)] if body is not None else []
            value = matches[0] if len(matches) == 1 else None
        if value is None or value == "":
            return None
        text = str(value)
        return text if len(text) <= 200 else "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def validate_settings(settings: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, message) for every problem in ``settings.dedupe``."""
    cfg = settings.get("dedupe")
    if not cfg:
        return []
    if not isinstance(cfg, dict):
        return [("settings.dedupe", "must be a mapping with 'header' or 'path'")]
    problems = []
    if cfg.get("header") and cfg.get("path"):
        problems.append(("settings.dedupe", "give a header or a JSONPath, not both"))
    if cfg.get("path"):
        err = validate_path(str(cfg["path"]))
        if err:
            problems.append(("settings.dedupe.path", err))
    window = cfg.get("window_seconds")
    if window not in (None, ""):
        try:
            ok = 1 <= int(window) <= MAX_WINDOW
        except (TypeError, ValueError):
            ok = False
        if not ok:
            problems.append(("settings.dedupe.window_seconds", f"must be 1 to {MAX_WINDOW} seconds"))
    return problems


_FIND = select(DedupeKey.run_id, DedupeKey.expires_at).where(
    DedupeKey.recipe_id == bindparam("b_recipe"), DedupeKey.key == bindparam("b_key"))
_DROP = delete(DedupeKey).where(DedupeKey.recipe_id == bindparam("b_recipe"), DedupeKey.key == bindparam("b_key"))
_ADD = insert(DedupeKey)


def first_run(conn: Connection, recipe_id: int, key: str, now: datetime) -> int | None:
    """The run of an earlier delivery with this key still inside its window."""
    row = conn.execute(_FIND, {"b_recipe": recipe_id, "b_key": key}).first()
    if row is None:
        return None
    if row.expires_at > now:
        return row.run_id
    conn.execute(_DROP, {"b_recipe": recipe_id, "b_key": key})  # expired: the key is free again
    return None


def remember(conn: Connection, recipe_id: int, key: str, run_id: int, now: datetime, spec: DedupeSpec) -> None:
    conn.execute(_ADD, {"recipe_id": recipe_id, "key": key, "run_id": run_id,
                        "expires_at": now + timedelta(seconds=spec.window_seconds)})
