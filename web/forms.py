"""The recipe editor and connection forms, built from connector declarations.

A recipe page is one HTML form: the recipe name (a ``FlaskForm``, which carries the CSRF
token), rows of extracted fields (``fields-<i>-name``), ordered step blocks
(``steps-<i>-key``, ``steps-<i>-inputs-<input>``), the delivery settings (``delivery-*``,
see ``settings_form``), sender verification and dead-run alerts (``verify-*``, ``alert-*``,
see ``security_form``). "Add step", "remove", "move" and "use this
path" are submit buttons that post the whole form and re-render it changed, so editing
needs no JavaScript; JavaScript only adds the one-click field picker.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from wtforms import SelectField, StringField

from automations.models import Connection
from automations.recipes import DEFAULT_RULE, RESERVED_NAMES, Problem, format_default, parse_default
from connectors import host_patterns
from connectors.base import Action
from connectors.registry import ACTIONS

from .form_fields import (
    DeclaredForm,
    Needed,
    TextField,
    choices,
    credential_form_class,
    inputs_form_class,
    is_blank,
)
from .security_form import DeadRunForm, VerifyForm
from .settings_form import DeliveryForm

__all__ = ["ConnectionForm", "RecipeEditor", "credential_form_class", "suggest_name"]

RUN_IF_HELP = ("Leave empty to always run. Otherwise one expression in {{ }}: when it is false for an event "
               "(or reads a value the event lacks), this step is skipped and the run goes on with the next. "
               "Two steps with opposite conditions make an if / else.")
_INDEX = re.compile(r"^(fields|steps)-(\d+)-")
_SEGMENT = re.compile(r"""\[\s*['"]([^'"]+)['"]\s*\]|\.?([^.\[\]'"]+)""")


class RecipeForm(FlaskForm):
    name = StringField("Recipe name", validators=[Needed()],
                       description="Shown in lists and in the run history.")


class ConnectionForm(FlaskForm):
    name = StringField("Connection name", validators=[Needed()],
                       description="Recipes choose a connection by this name.")


class DefaultField(TextField):
    """A field's default, typed: ``0`` is the number 0, ``"0"`` the text (see ``DEFAULT_RULE``).

    Shown as the text that reads back as the stored value, so saving an untouched editor
    stores exactly what was there.
    """

    def format(self, value: Any) -> str:
        return format_default(value)

    def process_formdata(self, valuelist: list[str]) -> None:
        self.data = parse_default(valuelist[0] if valuelist else None)


class FieldRowForm(DeclaredForm):
    declared = (
        ("name", TextField("Name", render_kw={"placeholder": "email"})),
        ("path", TextField("JSONPath", render_kw={"placeholder": "$.data.email"})),
        ("default", DefaultField("Default", description=DEFAULT_RULE,
                                 render_kw={"placeholder": "(none)", "title": DEFAULT_RULE})),
    )


class StepForm(DeclaredForm):
    declared = (
        ("key", TextField("Key", validators=[Needed()],
                          description="Later steps read this step's output as steps.<key>.")),
        ("name", TextField("Display name")),
        ("connection", SelectField("Connection", validate_choice=False, choices=[])),
        ("run_if", TextField("Only run if", description=RUN_IF_HELP,
                             render_kw={"placeholder": "(always) e.g. {{ status == 'paid' }}"})),
    )


@dataclass
class StepBlock:
    """One step of the editor: its action, its own fields and its generated inputs."""

    action_key: str
    action: Action | None
    form: StepForm
    inputs: DeclaredForm
    errors: list[str] = field(default_factory=list)


def suggest_name(path: str, taken: Iterable[str] = ()) -> str:
    """A field name from a JSONPath's last named segment: ``$.data.customer.email`` → email."""
    names = [a or b for a, b in _SEGMENT.findall(path.lstrip("$"))]
    names = [n.strip() for n in names if n.strip() and n.strip() not in ("*", "$") and not n.isdigit()]
    base = re.sub(r"\W", "_", names[-1] if names else "field").strip("_")
    base = re.sub(r"^[\d_]+", "", base)[:50] or "field"
    if base.lower() in RESERVED_NAMES:
        base += "_value"
    taken = set(taken)
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def _indices(formdata: MultiDict, kind: str) -> list[int]:
    found = {int(m.group(2)) for k in formdata if (m := _INDEX.match(k)) and m.group(1) == kind}
    return sorted(found)


def _rekey(formdata: MultiDict, kind: str, order: list[int]) -> MultiDict:
    """Renumber ``<kind>-<old>-*`` keys to ``<kind>-<position>-*`` following ``order``."""
    out = MultiDict()
    new_of = {old: pos for pos, old in enumerate(order)}
    for key, value in formdata.items(multi=True):
        m = _INDEX.match(key)
        if not m or m.group(1) != kind:
            out.add(key, value)
        elif int(m.group(2)) in new_of:
            out.add(f"{kind}-{new_of[int(m.group(2))]}-{key[m.end():]}", value)
    return out


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


class RecipeEditor:
    """Everything the recipe edit page shows and everything a save sends to the engine."""

    def __init__(self, form: RecipeForm, connections: list[Connection],
                 settings: dict[str, Any] | None = None, formdata: MultiDict | None = None) -> None:
        self.form = form
        self.connections = connections
        self.settings = dict(settings or {})
        self.delivery = DeliveryForm(self.settings, formdata)
        self.verify = VerifyForm(self.settings, connections, formdata)
        self.dead = DeadRunForm(self.settings, connections, formdata)
        self.fields: list[FieldRowForm] = []
        self.steps: list[StepBlock] = []
        self.problems: list[str] = []  # problems that belong to no field on the page

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_definition(cls, name: str, definition: dict[str, Any], connections: list[Connection]
                        ) -> RecipeEditor:
        ed = cls(RecipeForm(formdata=None, data={"name": name}), connections, definition.get("settings"))
        ed.fields = [FieldRowForm(data=f, prefix=f"fields-{i}-")
                     for i, f in enumerate(definition.get("fields") or [])]
        for i, step in enumerate(definition.get("steps") or []):
            ed.steps.append(ed._block(i, step.get("action", ""), None, step))
        ed._ensure_blank_row()
        return ed

    @classmethod
    def from_post(cls, formdata: MultiDict, connections: list[Connection],
                  settings: dict[str, Any] | None = None) -> tuple[RecipeEditor, bool]:
        """The editor as posted, with any add/remove/move/pick applied.

        Returns ``(editor, changed)``: ``changed`` means the post was an edit of the page's
        shape, not a save.
        """
        ed = cls(RecipeForm(formdata=formdata), connections, settings, formdata)
        data, changed = ed._restructure(MultiDict(formdata))
        ed.fields = [FieldRowForm(formdata=data, prefix=f"fields-{i}-")
                     for i in range(len(_indices(data, "fields")))]
        for i in range(len(_indices(data, "steps"))):
            ed.steps.append(ed._block(i, data.get(f"steps-{i}-action", ""), data, None))
        if (key := formdata.get("add_step")) is not None:
            changed = True
            if key in ACTIONS:
                ed.steps.append(ed._block(len(ed.steps), key, None, None))
            else:
                ed.problems.append(f"unknown action '{key}'")
        ed._ensure_blank_row()
        return ed, changed

    def _restructure(self, data: MultiDict) -> tuple[MultiDict, bool]:
        fields, steps = _indices(data, "fields"), _indices(data, "steps")
        changed = False
        if (i := _int(data.get("remove_field"))) is not None:
            fields = [f for pos, f in enumerate(fields) if pos != i]
            changed = True
        if (i := _int(data.get("remove_step"))) is not None:
            steps = [s for pos, s in enumerate(steps) if pos != i]
            changed = True
        for name, delta in (("step_up", -1), ("step_down", 1)):
            i = _int(data.get(name))
            if i is not None and 0 <= i < len(steps) and 0 <= i + delta < len(steps):
                steps[i], steps[i + delta] = steps[i + delta], steps[i]
            changed = changed or i is not None
        data = _rekey(_rekey(data, "fields", fields), "steps", steps)
        if "add_field" in data:
            data.add(f"fields-{len(fields)}-name", "")
            changed = True
        if path := data.get("pick_path"):
            self._pick(data, len(fields), path.strip())
            changed = True
        return data, changed

    def _pick(self, data: MultiDict, count: int, path: str) -> None:
        """Fill the first empty field row with ``path`` (or add one), naming it from the path."""
        taken = [data.get(f"fields-{i}-name", "") for i in range(count)]
        blank = [i for i in range(count) if not (data.get(f"fields-{i}-name", "").strip()
                                                 or data.get(f"fields-{i}-path", "").strip())]
        i = blank[0] if blank else count
        data.setlist(f"fields-{i}-path", [path])
        data.setlist(f"fields-{i}-name", [suggest_name(path, taken)])

    def _block(self, i: int, action_key: str, formdata: MultiDict | None,
               step: dict[str, Any] | None) -> StepBlock:
        action = ACTIONS.get(action_key)
        prefix = f"steps-{i}-"
        if step is None and formdata is None:  # a new step: sensible defaults
            step = {"key": self._new_key(action_key), "connection": self._only_connection(action)}
        form = StepForm(formdata=formdata, data=step, prefix=prefix)
        form["connection"].choices = self._connection_choices(action)
        if action is None:
            return StepBlock(action_key, None, form, DeclaredForm(), [f"unknown action '{action_key}'"])
        inputs_cls = inputs_form_class(action.key)
        inputs = inputs_cls(formdata=formdata, data=(step or {}).get("inputs"), prefix=prefix + "inputs-")
        return StepBlock(action_key, action, form, inputs)

    def _new_key(self, action_key: str) -> str:
        return suggest_name("$." + action_key, (b.form["key"].data for b in self.steps))

    def _kind_connections(self, action: Action | None) -> list[Connection]:
        kind = action.credential if action else None
        return [c for c in self.connections if kind and c.kind == kind]

    def _only_connection(self, action: Action | None) -> str | None:
        mine = self._kind_connections(action)
        return str(mine[0].id) if len(mine) == 1 and action and action.credential_required else None

    def _connection_choices(self, action: Action | None) -> list[tuple[str, str]]:
        none = "— choose —" if action and action.credential_required else "— none —"
        return choices([("", none), *((str(c.id), _connection_label(c)) for c in self._kind_connections(action))])

    def _ensure_blank_row(self) -> None:
        if not self.fields or self._filled(self.fields[-1]):
            self.fields.append(FieldRowForm(formdata=None, prefix=f"fields-{len(self.fields)}-"))

    @staticmethod
    def _filled(row: FieldRowForm) -> bool:
        return any(not is_blank(v.strip() if isinstance(v, str) else v) for v in row.values().values())

    # -- saving -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.form.name.data or ""

    def validate_local(self) -> bool:
        """Parse errors the engine never sees (bad JSON, a ``Name: value`` line without ':')."""
        ok = True
        for form in [*self.fields, *(b.form for b in self.steps), *(b.inputs for b in self.steps), self.delivery,
                     self.verify, self.dead]:
            ok = form.validate() and ok
        return ok and not self.problems

    def definition(self) -> dict[str, Any]:
        """The definition as posted; blank field rows are left out."""
        fields = []
        for row in filter(self._filled, self.fields):
            v = row.values()  # the default is already typed (a quoted " x " keeps its spaces)
            fields.append({"name": (v["name"] or "").strip(), "path": (v["path"] or "").strip(),
                           "default": v["default"]})
        steps = []
        for b in self.steps:
            s = b.form.values()
            wants_conn = b.action is None or b.action.credential is not None
            steps.append({
                "key": (s["key"] or "").strip(), "name": (s["name"] or "").strip(), "action": b.action_key,
                "connection": (s["connection"] or None) if wants_conn else None,
                "run_if": s["run_if"],  # blank or not: recipes.normalize decides
                "inputs": {k: v for k, v in b.inputs.values().items() if not is_blank(v)},
            })
        settings = self.dead.apply(self.verify.apply(self.delivery.apply(self.settings)))
        return {"fields": fields, "steps": steps, "settings": settings}

    def show(self, problems: list[Problem]) -> None:
        """Put each engine problem on the field it names; the rest go to the page's top."""
        for p in problems:
            if not self._place(p.where.split("."), p.message):
                self.problems.append(str(p))

    def _place(self, where: list[str], message: str) -> bool:
        if where == ["name"]:
            self.form.name.errors = [*self.form.name.errors, message]
            return True
        if where[0] == "settings":
            return any(f.place(where[1:], message) for f in (self.delivery, self.verify, self.dead))
        if len(where) < 3 or not where[1].isdigit():
            return False
        i = int(where[1])
        if where[0] == "fields":
            rows = [r for r in self.fields if self._filled(r)]
            return i < len(rows) and rows[i].add_error(where[2], message)
        if where[0] != "steps" or i >= len(self.steps):
            return False
        block = self.steps[i]
        if where[2] == "inputs" and len(where) > 3:
            sub = ".".join(where[4:])
            if block.inputs.add_error(where[3], f"{sub}: {message}" if sub else message):
                return True
            block.errors.append(f"{where[3]}: {message}")
            return True
        if not block.form.add_error(where[2], message) and message not in block.errors:
            block.errors.append(message)
        return True

    @property
    def error_count(self) -> int:
        forms = [self.form, *self.fields, *(b.form for b in self.steps), *(b.inputs for b in self.steps),
                 self.delivery]
        return (len(self.problems) + sum(len(b.errors) for b in self.steps)
                + sum(len(f.errors) for form in forms for f in form)
                + self.verify.error_count + self.dead.error_count)


def _connection_label(conn: Connection) -> str:
    """The connection's name, and the hosts it is bound to, so an editor sees where its
    credentials may go before writing the step's URL."""
    allowed = (conn.settings or {}).get("allowed_hosts")
    return f"{conn.name} (only {host_patterns.describe(allowed)})" if allowed else conn.name
