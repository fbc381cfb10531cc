"""Recipe pages: list, create/edit (the generated editor), detail, pause/resume, delete.

Views parse the form, call ``automations.recipes`` and render; every rule lives there.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.wrappers import Response

from automations import history, recipes
from automations.executor import trigger_of
from automations.history import RunFilter, runs_query
from automations.mapping import sample_paths
from automations.models import Connection, Event, Recipe
from automations.preview import Preview, preview
from automations.recipes import RecipeInvalid
from connectors.registry import ACTIONS, CREDENTIALS

from .auth import requires
from .extensions import core, db, notify_runner
from .forms import RecipeEditor

bp = Blueprint("recipes", __name__, url_prefix="/recipes")

RECENT_RUNS = 10


def _recipe(recipe_id: int) -> Recipe:
    return db.get_or_404(Recipe, recipe_id)


def _connections() -> list[Connection]:
    return list(db.session.scalars(select(Connection).order_by(Connection.name)))


@dataclass
class _Sample:
    """The editor's sample: the event its field picker and preview use, its paths, and the
    recent events it can be switched to (``sample_event`` in the form or the query)."""

    event: Event | None = None
    paths: list[dict[str, Any]] = field(default_factory=list)
    choices: list[history.SampleChoice] = field(default_factory=list)


def _sample(recipe: Recipe | None) -> _Sample:
    if recipe is None:
        return _Sample()
    choices = history.sample_choices(db.session, recipe.id)
    event = history.sample_event(db.session, recipe.id, choices, request.values.get("sample_event", type=int))
    paths = sample_paths(event.body) if event is not None and event.body is not None else []
    return _Sample(event, paths, choices)


def _actions_by_group() -> list[tuple[str, list[Any]]]:
    groups: dict[str, list[Any]] = {}
    for action in ACTIONS.values():
        groups.setdefault(action.group or "Other", []).append(action)
    return sorted(groups.items())


def _save(editor: RecipeEditor, write: Callable[[str, dict[str, Any]], Recipe]) -> Recipe | None:
    """Write through the engine; on any problem show it on its field and write nothing."""
    definition = editor.definition()
    if not editor.validate_local():
        # Still show what else is wrong, so one round trip fixes everything.
        conns = {c.id: c for c in editor.connections}
        editor.show(recipes.name_problems(editor.name) + recipes.validate(recipes.normalize(definition), conns))
        return None
    try:
        return write(editor.name, definition)
    except RecipeInvalid as exc:
        db.session.rollback()
        editor.show(exc.problems)
        return None


def _edit_page(editor: RecipeEditor, recipe: Recipe | None) -> str:
    sample = _sample(recipe)
    return render_template("recipes/edit.html", editor=editor, recipe=recipe, sample=sample.event,
                           paths=sample.paths, sample_choices=sample.choices, groups=_actions_by_group(),
                           credentials=CREDENTIALS, default_rule=recipes.DEFAULT_RULE,
                           preview=_preview(editor, sample.event))


def _preview(editor: RecipeEditor, event: Event | None) -> Preview | None:
    """What the editor's recipe, as it stands in the form (saved or not), would send for the
    sample event."""
    if event is None or event.parse_error:
        return None
    definition, trigger = editor.definition(), trigger_of(event)
    # End this request's transaction first: on SQLite a session's transaction holds the write
    # lock, and webhooks waited behind a slow preview until they got 503.
    db.session.rollback()
    return preview(recipes.normalize(definition), trigger)  # as it would be saved


@bp.get("/")
def index() -> str:
    rows = list(db.session.scalars(
        select(Recipe).options(selectinload(Recipe.versions)).order_by(Recipe.name, Recipe.id)))
    return render_template("recipes/index.html", recipes=rows, last=history.last_runs(db.session, [r.id for r in rows]),
                           steps={r.id: len(recipes.current_definition(r)["steps"]) for r in rows})


@bp.route("/new", methods=["GET", "POST"])
@requires("editor")
def new() -> Response | str:
    conns = _connections()
    if request.method == "GET":
        return _edit_page(RecipeEditor.from_definition("", recipes.empty_definition(), conns), None)
    editor, changed = RecipeEditor.from_post(request.form, conns)
    if not changed:
        saved = _save(editor, lambda name, d: recipes.create(db.session, name, d, clock=core().clock))
        if saved is not None:
            flash(f"Recipe '{saved.name}' created. Send a test event to its URL.", "success")
            return redirect(url_for(".detail", recipe_id=saved.id))
    return _edit_page(editor, None)


@bp.route("/<int:recipe_id>/edit", methods=["GET", "POST"])
@requires("editor")
def edit(recipe_id: int) -> Response | str:
    recipe = _recipe(recipe_id)
    conns = _connections()
    current = recipes.current_definition(recipe)
    if request.method == "GET":
        return _edit_page(RecipeEditor.from_definition(recipe.name, current, conns), recipe)
    editor, changed = RecipeEditor.from_post(request.form, conns, current.get("settings"))
    if not changed and "refresh_preview" not in request.form:  # without JS, the preview's own button
        before = (recipe.name, recipe.current_version)
        saved = _save(editor, lambda name, d: recipes.update_recipe(
            db.session, recipe, name=name, definition=d, clock=core().clock))
        if saved is not None:
            if saved.current_version != before[1]:
                flash(f"Saved as version {saved.current_version}.", "success")
            elif saved.name != before[0]:
                flash(f"Renamed to '{saved.name}' (definition unchanged).", "success")
            else:
                flash("No changes to save (definition unchanged).", "info")
            return redirect(url_for(".detail", recipe_id=saved.id))
    return _edit_page(editor, recipe)


@bp.post("/<int:recipe_id>/preview")
@requires("editor")
def preview_panel(recipe_id: int) -> str:
    """The live preview alone, for the editor's script to refresh as the user types."""
    recipe = _recipe(recipe_id)
    editor, _ = RecipeEditor.from_post(request.form, _connections(), recipes.current_definition(recipe).get("settings"))
    event = _sample(recipe).event
    return render_template("recipes/_preview.html", recipe=recipe, sample=event, preview=_preview(editor, event))


@bp.get("/<int:recipe_id>")
def detail(recipe_id: int) -> str:
    recipe = _recipe(recipe_id)
    runs = db.session.scalars(runs_query(RunFilter(recipe_id=recipe.id)).limit(RECENT_RUNS)).all()
    conns = {c.id: c for c in _connections()}
    return render_template("recipes/detail.html", recipe=recipe, runs=runs, connections=conns,
                           definition=recipes.current_definition(recipe), actions=ACTIONS,
                           held=recipes.count_held(db.session, recipe))


@bp.post("/<int:recipe_id>/pause")
@requires("editor")
def pause(recipe_id: int) -> Response:
    recipe = _recipe(recipe_id)
    reason = (request.form.get("reason") or "").strip() or "paused from the web UI"
    recipes.set_paused(db.session, recipe, True, reason[:500])
    flash("Paused: new events are kept as held runs until you resume.", "success")
    return redirect(url_for(".detail", recipe_id=recipe_id))


@bp.post("/<int:recipe_id>/resume")
@requires("editor")
def resume(recipe_id: int) -> Response:
    recipe = _recipe(recipe_id)
    recipes.set_paused(db.session, recipe, False)
    if request.form.get("held") == "run":
        count = recipes.release_held(db.session, recipe, clock=core().clock)
        notify_runner()
        flash(f"Resumed; {count} held event{'s' if count != 1 else ''} queued.", "success")
    else:
        flash("Resumed. Held events stay in the run history; run them from there.", "success")
    return redirect(url_for(".detail", recipe_id=recipe_id))


@bp.post("/<int:recipe_id>/duplicate")
@requires("editor")
def duplicate(recipe_id: int) -> Response:
    recipe = _recipe(recipe_id)
    try:
        copy = recipes.duplicate(db.session, recipe, clock=core().clock)
    except RecipeInvalid as exc:  # a connection it uses was deleted since: it must be edited first
        db.session.rollback()
        flash("Could not copy: " + "; ".join(f"{p.where}: {p.message}" for p in exc.problems), "error")
        return redirect(url_for(".detail", recipe_id=recipe_id))
    flash(f"Copied as '{copy.name}', with its own inbound URL. The copy is paused: edit it, then resume it.",
          "success")
    return redirect(url_for(".detail", recipe_id=copy.id))


@bp.post("/<int:recipe_id>/token")
@requires("editor")
def new_token(recipe_id: int) -> Response:
    """A leaked URL is revoked by giving the recipe a new one."""
    recipe = _recipe(recipe_id)
    recipes.rotate_token(db.session, recipe)
    flash("New inbound URL generated; the old one now answers 404.", "success")
    return redirect(url_for(".detail", recipe_id=recipe_id))


@bp.route("/<int:recipe_id>/delete", methods=["GET", "POST"])
@requires("editor")
def delete(recipe_id: int) -> Response | str:
    recipe = _recipe(recipe_id)
    if request.method == "GET":
        return render_template("recipes/delete.html", recipe=recipe)
    name = recipe.name
    recipes.delete(db.session, recipe)
    flash(f"Recipe '{name}' deleted; its runs stay in the history.", "success")
    return redirect(url_for(".index"))
