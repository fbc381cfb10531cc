"""WTForms fields generated from connector declarations (``connectors.base.Field``).

Each field turns what a person types into the value stored in a definition, and back, so an
edit page shows exactly what was saved. Text that fails to parse is kept as typed, so the
page re-renders it unchanged next to its error.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache
from typing import Any, ClassVar

from wtforms import BooleanField, Field, PasswordField, SelectField, StringField, TextAreaField
from wtforms.fields.core import UnboundField
from wtforms.form import BaseForm

from connectors.base import Field as Declared
from connectors.registry import ACTIONS, CREDENTIALS

try:  # WTForms >= 3.3 deprecates (value, label) tuples
    from wtforms.fields.choices import SelectChoice
except ImportError:  # pragma: no cover - older WTForms
    SelectChoice = None


def choices(pairs: Iterable[tuple[str, str]]) -> list[Any]:
    """Select options in the form the installed WTForms prefers."""
    return [SelectChoice(v, label) if SelectChoice else (v, label) for v, label in pairs]


class Needed:
    """Marks a field as required for the label only: the engine decides, so the browser
    never blocks an "add step" post over an empty input."""

    field_flags: ClassVar[dict[str, bool]] = {"needed": True}

    def __call__(self, form: Any, field: Any) -> None:
        return None


class _Typed:
    """Mixin: render the raw text when there is some, else the formatted stored value."""

    def _value(self) -> str:
        raw = getattr(self, "raw_data", None)
        if raw:
            return str(raw[0])
        return self.format(self.data)  # type: ignore[attr-defined]

    def format(self, value: Any) -> str:
        return "" if value is None else str(value)


class JSONField(_Typed, TextAreaField):
    """JSON text. A template input that is not JSON yet (``{"n": {{ n }}}``) stays a string
    template; a plain input must be valid JSON."""

    def __init__(self, *args: Any, template: bool = True, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.template = template

    def format(self, value: Any) -> str:
        if value is None or isinstance(value, str):
            return value or ""
        return json.dumps(value, indent=2, ensure_ascii=False)

    def process_formdata(self, valuelist: list[str]) -> None:
        text = (valuelist[0] if valuelist else "").strip()
        if not text:
            self.data = None
            return
        try:
            self.data = json.loads(text)
        except ValueError as exc:
            self.data = text
            if not self.template:
                raise ValueError(f"is not valid JSON ({exc})") from None


class KeyValueField(_Typed, TextAreaField):
    """One ``Name: value`` per line, stored as a dict (headers, query parameters)."""

    def format(self, value: Any) -> str:
        if isinstance(value, dict):
            return "\n".join(f"{k}: {v}" for k, v in value.items())
        return "" if value is None else str(value)

    def process_formdata(self, valuelist: list[str]) -> None:
        self.data = {}
        text = valuelist[0] if valuelist else ""
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise ValueError(f"line {n}: write one 'Name: value' per line")
            self.data[name.strip()] = value.strip()


class NumberField(_Typed, StringField):
    """A number, or (for a template input) an expression such as ``{{ amount }}``."""

    def __init__(self, *args: Any, template: bool = True, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.template = template

    def process_formdata(self, valuelist: list[str]) -> None:
        text = (valuelist[0] if valuelist else "").strip()
        self.data = None
        if not text:
            return
        for convert in (int, float):
            try:
                self.data = convert(text)
                return
            except ValueError:
                pass
        self.data = text
        if not self.template:
            raise ValueError("must be a number")


class EmailListField(_Typed, StringField):
    """Addresses separated by commas; kept as one string so a template may expand to several."""

    def format(self, value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return ", ".join(map(str, value))
        return "" if value is None else str(value)

    def process_formdata(self, valuelist: list[str]) -> None:
        text = valuelist[0] if valuelist else ""
        self.data = ", ".join(p.strip() for p in re.split(r"[,\n]", text) if p.strip())


class TextField(_Typed, StringField):
    pass


class LongTextField(_Typed, TextAreaField):
    pass


def build_field(decl: Declared, *, secret_saved: bool = False) -> UnboundField:
    """The WTForms field for one declared field. Never a branch on a connector."""
    kw: dict[str, Any] = {
        "label": decl.label,
        "description": decl.help,
        "validators": [Needed()] if decl.required else [],
        "render_kw": {"placeholder": decl.placeholder} if decl.placeholder else {},
        "default": decl.default,
    }
    if decl.secret:
        kw["render_kw"]["autocomplete"] = "new-password"
        if secret_saved:
            kw["render_kw"]["placeholder"] = "saved — leave blank to keep"
            kw["description"] = " ".join(filter(None, [decl.help, "Saved — leave blank to keep."]))
        kw["default"] = None
        return PasswordField(**kw)  # renders no value, ever
    if decl.type == "select":
        options = list(decl.choices) if decl.required else [("", "—"), *decl.choices]
        return SelectField(choices=choices(options), validate_choice=False, **kw)
    if decl.type == "boolean":
        kw["default"] = bool(decl.default)
        return BooleanField(**kw)
    if decl.type == "json":
        kw["render_kw"].update(rows=6, spellcheck="false", **{"class": "mono"})
        return JSONField(template=decl.template, **kw)
    if decl.type == "keyvalue":
        kw["render_kw"].update(rows=3, spellcheck="false", **{"class": "mono"})
        return KeyValueField(**kw)
    if decl.type == "number":
        kw["render_kw"].setdefault("inputmode", "decimal")
        return NumberField(template=decl.template, **kw)
    if decl.type == "email_list":
        return EmailListField(**kw)
    if decl.type == "text":
        kw["render_kw"]["rows"] = 4
        return LongTextField(**kw)
    return TextField(**kw)


class DeclaredForm(BaseForm):
    """A form whose fields come from a declaration. Fields live in a dict (``form[name]``),
    so an input called ``data`` or ``errors`` cannot shadow a form attribute."""

    declared: tuple[tuple[str, UnboundField], ...] = ()

    def __init__(self, formdata: Any = None, data: dict[str, Any] | None = None,
                 prefix: str = "") -> None:
        super().__init__(self.declared, prefix=prefix)
        self.process(formdata, data={k: v for k, v in (data or {}).items() if k in self._fields})

    def values(self) -> dict[str, Any]:
        return {name: f.data for name, f in self._fields.items()}

    def add_error(self, name: str, message: str) -> bool:
        if name not in self._fields:
            return False
        fld: Field = self._fields[name]
        if message not in fld.errors:  # the local check and the engine may say the same thing
            fld.errors = [*fld.errors, message]
        return True


@cache
def inputs_form_class(action_key: str) -> type[DeclaredForm]:
    """The inputs form of an action, built once from ``Action.fields``."""
    action = ACTIONS[action_key]
    fields = tuple((f.name, build_field(f)) for f in action.fields)
    return type(f"Inputs_{action_key}", (DeclaredForm,), {"declared": fields})


CLEAR_PREFIX = "clear-"  # declared names are identifiers, so "clear-<name>" never collides
NOT_KEPT = "Not saved: enter it again (secrets are never sent back to the browser)"


class CredentialForm(DeclaredForm):
    """A connection type's fields, plus a "Clear the saved value" box after each optional
    secret that is saved: a blank secret means "keep", so removing one needs its own input."""

    secrets: tuple[str, ...] = ()   # the declared secret fields
    clearable: tuple[str, ...] = ()  # the secrets that got a box

    def values(self) -> dict[str, Any]:
        return {name: f.data for name, f in self._fields.items() if not name.startswith(CLEAR_PREFIX)}

    def cleared(self) -> frozenset[str]:
        """The secrets whose box is ticked."""
        return frozenset(n for n in self.clearable if self._fields[CLEAR_PREFIX + n].data)

    def flag_typed_secrets(self) -> None:
        """The form is shown again with an error: password inputs never carry their value back,
        so say so on each secret that was typed, rather than let the next save drop it."""
        for name in self.secrets:
            if self._fields[name].data not in (None, ""):
                self.add_error(name, NOT_KEPT)


def credential_form_class(kind: str, saved_secrets: frozenset[str] = frozenset()) -> type[CredentialForm]:
    """The form of a connection type; secrets already saved say so instead of showing."""
    return _credential_form_class(kind, saved_secrets)


@cache
def _credential_form_class(kind: str, saved_secrets: frozenset[str]) -> type[CredentialForm]:
    ctype = CREDENTIALS[kind]
    fields: list[tuple[str, UnboundField]] = []
    clearable = []
    for f in ctype.fields:
        fields.append((f.name, build_field(f, secret_saved=f.name in saved_secrets)))
        if f.secret and not f.required and f.name in saved_secrets:  # a required one is replaced, never cleared
            clearable.append(f.name)
            fields.append((CLEAR_PREFIX + f.name, BooleanField(
                "Clear the saved value", default=False,
                render_kw={"aria-label": f"Clear the saved value: {f.label}"})))  # which one, for screen readers
    return type(f"Credentials_{kind}", (CredentialForm,), {
        "declared": tuple(fields), "secrets": tuple(sorted(ctype.secret_names)), "clearable": tuple(clearable)})


def is_blank(value: Any) -> bool:
    return value is None or value == "" or value == {} or value == []
