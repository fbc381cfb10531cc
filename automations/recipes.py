"""Recipes: validation of a definition and the operations the UI, API and CLI share.

A definition is plain data (so it exports, versions and diffs cleanly)::

    {"fields":   [{"name": "email", "path": "$.data.email", "default": None}],
     "steps":    [{"key": "notify", "name": "Tell sales", "action": "slack_message",
                   "connection": 3, "run_if": "{{ plan == 'pro' }}",   # optional
                   "inputs": {"text": "New signup: {{ email }}"}}],
     "settings": {}}

Every save validates the whole definition and collects *all* problems, each tied to the
place it belongs (``fields.0.path``, ``steps.1.inputs.text``) so a form can show it on the
field. Nothing is written unless the whole definition is valid.
"""
from __future__ import annotations

import copy
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Update, case, func, select, update
from sqlalchemy.orm import Session

from connectors.base import Action
from connectors.flow import condition_problem
from connectors.registry import ACTIONS

from . import dedupe, retry, verification
from .clock import Clock, system_clock
from .mapping import validate_path
from .models import Connection, Recipe, RecipeStatus, RecipeVersion, Run, RunStatus
from .templating import validate_template

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
RESERVED_NAMES = frozenset({"trigger", "steps", "fields", "now", "loop", "range", "true", "false", "none"})
TOKEN_BYTES = 24  # 192 bits of randomness, URL-safe base64 → 32 characters
TOKEN_FORMAT = re.compile(r"^[A-Za-z0-9_-]{22,64}$")  # imported tokens: at least 128 bits
NAME_MAX = 200  # the recipes.name column is String(200)
DEFAULT_RULE = ("Used when the path matches nothing. Read as JSON when it parses as JSON (0, 2.5, "
                'true, null, [], {"a": 1}, "quoted text"), otherwise as plain text. Empty or null: no default.')


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class Problem:
    where: str    # dotted location: "name", "fields.0.path", "steps.1.inputs.text"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class RecipeInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


def empty_definition() -> dict[str, Any]:
    return {"fields": [], "steps": [], "settings": {}}


def parse_default(text: str | None) -> Any:
    """A field default as typed in a form: JSON when the text parses as JSON, else the text.

    Steps do arithmetic on defaults (``{{ cents / 100 }}``), so ``0`` must mean the number 0,
    not the string "0"; a quoted ``"0"`` is the text. Blank (or ``null``) means no default.
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def format_default(value: Any) -> str:
    """The text that :func:`parse_default` reads back as ``value``, for showing it in a form.

    Plain text is shown as is unless it would read back as something else (``"0"``,
    ``"true"``, padded text), then it is shown quoted.
    """
    if value is None:
        return ""
    if isinstance(value, str) and parse_default(value) == value:
        return value
    return json.dumps(value, ensure_ascii=False)


def normalize(definition: dict[str, Any] | None) -> dict[str, Any]:
    d = copy.deepcopy(definition or {})
    out = empty_definition()
    out["fields"] = [
        {"name": str(f.get("name", "")).strip(), "path": str(f.get("path", "")).strip(),
         **({"default": f["default"]} if f.get("default") is not None else {})}
        for f in d.get("fields") or []
    ]
    out["steps"] = [
        {"key": str(s.get("key", "")).strip(), "name": str(s.get("name") or "").strip(),
         "action": str(s.get("action", "")).strip(), "connection": s.get("connection"),
         **({"run_if": run_if} if not _blank(run_if := _trimmed(s.get("run_if"))) else {}),
         "inputs": dict(s.get("inputs") or {})}
        for s in d.get("steps") or []
    ]
    out["settings"] = dict(d.get("settings") or {})
    return out


def validate(definition: dict[str, Any], connections: dict[int, Connection]) -> list[Problem]:
    """All problems in a (normalized) definition; empty list when it can be saved."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, f in enumerate(definition["fields"]):
        problems += _check_name(f"fields.{i}.name", f["name"], seen, "field")
        err = validate_path(f["path"])
        if err:
            problems.append(Problem(f"fields.{i}.path", err))
    keys: set[str] = set()
    for i, step in enumerate(definition["steps"]):
        problems += _validate_step(f"steps.{i}", step, keys, connections)
    last = definition["steps"][-1] if definition["steps"] else None
    if last is not None and getattr(ACTIONS.get(last["action"]), "waits", None) is not None:
        problems.append(Problem(f"steps.{len(definition['steps']) - 1}.action",
                                f"'{ACTIONS[last['action']].label}' holds back the steps after it, and there are "
                                "none: add the step that should wait, or remove the delay"))
    problems += [Problem(where, msg) for where, msg in dedupe.validate_settings(definition["settings"])]
    problems += [Problem(where, msg) for where, msg in retry.validate_settings(definition["settings"])]
    problems += _validate_alert(definition["settings"], connections)
    problems += [Problem(w, m) for w, m in verification.validate_settings(definition["settings"], connections)]
    return problems


def _validate_alert(settings: dict[str, Any], connections: dict[int, Connection]) -> list[Problem]:
    """``settings.alert`` is one step (action, connection, inputs) run when a run goes dead."""
    problems = []
    alert = settings.get("alert")
    if alert:
        if not isinstance(alert, dict):
            return [Problem("settings.alert", "must be a step: action, connection and inputs")]
        step = {"key": "alert", "action": str(alert.get("action", "")), "connection": alert.get("connection"),
                "inputs": dict(alert.get("inputs") or {})}
        if getattr(ACTIONS.get(step["action"]), "controls_flow", False):
            return [Problem("settings.alert.action", f"'{ACTIONS[step['action']].label}' sends nothing: "
                                                     "choose an action that sends the alert")]
        problems += _validate_step("settings.alert", step, set(), connections)
    limit = settings.get("pause_after_dead")
    if limit not in (None, "") and not (isinstance(limit, int) and 0 <= limit <= 10_000):
        problems.append(Problem("settings.pause_after_dead", "must be a whole number from 0 (never) to 10000"))
    return problems


def name_problems(name: str) -> list[Problem]:
    """Problems with a recipe's name (the column holds at most ``NAME_MAX`` characters)."""
    name = (name or "").strip()
    if not name:
        return [Problem("name", "is required")]
    if len(name) > NAME_MAX:
        return [Problem("name", f"must be at most {NAME_MAX} characters (this one has {len(name)})")]
    return []


def _check_name(where: str, name: str, seen: set[str], what: str) -> list[Problem]:
    if not IDENTIFIER.match(name):
        return [Problem(where, f"{what} names use letters, digits and _ and start with a letter")]
    if name.lower() in RESERVED_NAMES:
        return [Problem(where, f"'{name}' is reserved")]
    if name in seen:
        return [Problem(where, f"{what} '{name}' is defined twice")]
    seen.add(name)
    return []


def _validate_step(at: str, step: dict[str, Any], keys: set[str],
                   connections: dict[int, Connection]) -> list[Problem]:
    problems = _check_name(f"{at}.key", step["key"], keys, "step key")
    action = ACTIONS.get(step["action"])
    if action is None:
        return problems + [Problem(f"{at}.action", f"unknown action '{step['action']}'")]
    problems += _validate_connection(at, action, step.get("connection"), connections)
    if "run_if" in step and (err := _condition_problem(step["run_if"])):
        problems.append(Problem(f"{at}.run_if", err))
    inputs = step["inputs"]
    conn = connections.get(_as_int(step.get("connection")) or 0)
    if action.check_inputs is not None and conn is not None and conn.kind == action.credential:
        problems += [Problem(f"{at}.inputs.{name}", err)
                     for name, err in action.check_inputs(inputs, dict(conn.settings or {})).items()]
    for name in inputs:
        if action.field(name) is None:
            problems.append(Problem(f"{at}.inputs.{name}", f"'{action.label}' has no input '{name}'"))
    for fld in action.fields:
        value = inputs.get(fld.name)
        if fld.required and _blank(value):
            problems.append(Problem(f"{at}.inputs.{fld.name}", "is required"))
            continue
        if _blank(value):
            continue
        if fld.type == "select" and not fld.template and fld.choices:
            allowed = {c[0] for c in fld.choices}
            if value not in allowed:
                problems.append(Problem(f"{at}.inputs.{fld.name}",
                                        f"must be one of {', '.join(sorted(allowed))}"))
        before = len(problems)
        if fld.template:
            for sub, text in _strings(value, f"{at}.inputs.{fld.name}"):
                err = validate_template(text)
                if err:
                    problems.append(Problem(sub, err))
        if fld.check is not None and len(problems) == before and (err := fld.check(value)):
            problems.append(Problem(f"{at}.inputs.{fld.name}", err))
    return problems


def _condition_problem(value: Any) -> str | None:
    """A step's "only run if": a template (its syntax checked first, so the position is named)
    that is one expression, as "Only continue if"'s condition."""
    if isinstance(value, str) and (err := validate_template(value)):
        return err
    return condition_problem(value)


def _validate_connection(at: str, action: Action, conn_id: Any,
                         connections: dict[int, Connection]) -> list[Problem]:
    if conn_id in (None, "", 0):
        if action.credential_required:
            return [Problem(f"{at}.connection", "choose a connection")]
        return []
    if action.credential is None:
        return [Problem(f"{at}.connection", f"'{action.label}' takes no connection")]
    conn = connections.get(_as_int(conn_id))
    if conn is None:
        return [Problem(f"{at}.connection", f"connection {conn_id} does not exist")]
    if conn.kind != action.credential:
        return [Problem(f"{at}.connection", f"'{conn.name}' is a {conn.kind} connection, "
                                            f"this action needs {action.credential}")]
    return []


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _trimmed(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == {} or value == []


def _strings(value: Any, where: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k, f"{where}.{k}") if isinstance(k, str) and "{" in k else ()
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, list):
        for j, v in enumerate(value):
            yield from _strings(v, f"{where}.{j}")


def _connections(session: Session) -> dict[int, Connection]:
    return {c.id: c for c in session.scalars(select(Connection))}


def _checked(session: Session, name: str, definition: dict[str, Any] | None) -> dict[str, Any]:
    d = normalize(definition)
    problems = name_problems(name)
    problems += validate(d, _connections(session))
    if problems:
        raise RecipeInvalid(problems)
    for step in d["steps"]:
        step["connection"] = _as_int(step["connection"]) if step["connection"] not in (None, "") else None
    return d


def create(session: Session, name: str, definition: dict[str, Any] | None = None, *,
           token: str | None = None, paused: bool = False, clock: Clock = system_clock,
           commit: bool = True) -> Recipe:
    """Validate and insert a recipe with version 1."""
    d = _checked(session, name, definition)
    now = clock.now()
    recipe = Recipe(name=name.strip(), token=token or new_token(), current_version=1,
                    status=(RecipeStatus.PAUSED if paused else RecipeStatus.ACTIVE).value,
                    created_at=now, updated_at=now)
    recipe.versions.append(RecipeVersion(version=1, definition=d, created_at=now))
    session.add(recipe)
    if commit:
        session.commit()
    return recipe


COPY_SUFFIX = " (copy)"


def duplicate(session: Session, recipe: Recipe, *, clock: Clock = system_clock) -> Recipe:
    """A copy of the recipe's current version under its own new inbound URL. The copy starts
    paused: two recipes acting on one sender's events by accident is worse than one click to
    resume it once it is edited (Zapier and n8n leave copies off too)."""
    name = recipe.name[:NAME_MAX - len(COPY_SUFFIX)] + COPY_SUFFIX
    copy_ = create(session, name, current_definition(recipe), paused=True, clock=clock, commit=False)
    copy_.status_reason = f"a copy of '{recipe.name}': resume it when it is ready"[:500]
    session.commit()
    return copy_


def update_recipe(session: Session, recipe: Recipe, *, name: str | None = None,
                  definition: dict[str, Any] | None = None, clock: Clock = system_clock,
                  commit: bool = True) -> Recipe:
    """Rename and/or save a new version (only when the definition changed).

    A save that changes neither the name nor the definition writes nothing, so re-saving an
    untouched editor neither makes a version nor moves ``updated_at``.
    """
    new_name = recipe.name if name is None else name
    d = _checked(session, new_name, definition if definition is not None else current_definition(recipe))
    renamed = new_name.strip() != recipe.name
    changed = not same_behaviour(d, current_definition(recipe))
    recipe.name = new_name.strip()
    if changed:
        recipe.current_version += 1
        recipe.versions.append(RecipeVersion(version=recipe.current_version, definition=d,
                                             created_at=clock.now()))
    if renamed or changed:
        recipe.updated_at = clock.now()
    if commit:
        session.commit()
    return recipe


def same_behaviour(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two saved definitions run the same way.

    The editor writes out every input it shows, so an imported step without
    ``content_type`` comes back with the declared default the runner would use anyway;
    that is not a change worth a new version.
    """
    return _as_run(a) == _as_run(b)


def _as_run(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition with each step's (and the alert's) missing inputs set to the declared
    defaults the runner applies."""
    d = copy.deepcopy(definition)
    alert = d.get("settings", {}).get("alert")
    for step in [*d.get("steps", []), *([alert] if isinstance(alert, dict) else [])]:
        action = ACTIONS.get(step.get("action", ""))
        if action is not None and isinstance(step.get("inputs"), dict):
            for fld in action.fields:
                if fld.default is not None:
                    step["inputs"].setdefault(fld.name, fld.default)
    return d


def current_definition(recipe: Recipe) -> dict[str, Any]:
    for v in reversed(recipe.versions):
        if v.version == recipe.current_version:
            return copy.deepcopy(v.definition)
    return empty_definition()


def set_paused(session: Session, recipe: Recipe, paused: bool, reason: str | None = None,
               commit: bool = True) -> None:
    """Pausing also holds the recipe's queued runs (new ones and retries waiting for their
    next attempt): a pause is how people stop a recipe hammering a broken receiver."""
    recipe.status = (RecipeStatus.PAUSED if paused else RecipeStatus.ACTIVE).value
    recipe.status_reason = reason if paused else None
    if paused:
        session.execute(hold_queued(recipe.id))
    if commit:
        session.commit()


def hold_queued(recipe_id: int) -> Update:
    """The statement that holds a recipe's queued runs (they wait for a resume, as new events
    to a paused recipe do). Runs in flight finish their attempt."""
    return (update(Run).where(Run.recipe_id == recipe_id, Run.status == RunStatus.QUEUED.value)
            .values(status=RunStatus.HELD.value).execution_options(synchronize_session=False))


def release_held(session: Session, recipe: Recipe, clock: Clock = system_clock) -> int:
    """Queue every held run, due now, except one held during a delay step, which keeps the
    time its delay ends (a follow-up planned for Friday is not sent on resume on Monday; it
    is told apart from a run waiting to retry by having no error). A run with no step done
    yet runs the current version; one held part-way goes on with the version its earlier
    steps ran, from the step it stopped at."""
    now = clock.now()
    delayed = Run.error.is_(None) & (Run.step_index > 0) & (Run.next_attempt_at > now)
    result = session.execute(
        update(Run)
        .where(Run.recipe_id == recipe.id, Run.status == RunStatus.HELD.value)
        .values(status=RunStatus.QUEUED.value, next_attempt_at=case((delayed, Run.next_attempt_at), else_=now),
                recipe_version=case((Run.step_index == 0, recipe.current_version), else_=Run.recipe_version))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount or 0


def count_held(session: Session, recipe: Recipe) -> int:
    return session.scalar(select(func.count()).select_from(Run).where(
        Run.recipe_id == recipe.id, Run.status == RunStatus.HELD.value)) or 0


def rotate_token(session: Session, recipe: Recipe) -> str:
    """Give the recipe a new inbound URL (a leaked one is revoked: the old token gets 404). Commits."""
    recipe.token = new_token()
    session.commit()
    return recipe.token


def delete(session: Session, recipe: Recipe) -> None:
    """Delete the recipe; its events and runs stay in history (recipe_id becomes NULL)."""
    session.delete(recipe)
    session.commit()


def by_token(session: Session, token: str) -> Recipe | None:
    if not token or len(token) > 64:
        return None
    return session.scalar(select(Recipe).where(Recipe.token == token))
