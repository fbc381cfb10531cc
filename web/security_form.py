"""The recipe editor's "Verify the sender" (``settings.verify``) and "When a run goes dead"
(``settings.pause_after_dead``, ``settings.alert``) sections, built like ``settings_form``:
each edits only the keys it shows, keeps every other key, and a post without the section
keeps the settings as they were.

Each preset (and each alert action) has its own block of fields generated from its
declaration. All blocks are rendered, so the page works without JavaScript (which only hides
the blocks not chosen); only the chosen block is validated and saved.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from typing import Any

from werkzeug.datastructures import MultiDict
from wtforms import SelectField

from automations.alerts import DEFAULT_PAUSE_AFTER_DEAD
from automations.models import Connection
from automations.verification import SECRET_KIND
from connectors.base import Action
from connectors.registry import ACTIONS
from connectors.verifiers import VERIFIERS

from .form_fields import DeclaredForm, build_field, choices, inputs_form_class, is_blank
from .settings_form import WholeNumberField

ALERT_ACTIONS = {k: a for k, a in ACTIONS.items() if not a.controls_flow}  # a filter or delay alerts no one

__all__ = ["DeadRunForm", "VerifyForm"]

VERIFY_PREFIX = "verify-"
ALERT_PREFIX = "alert-"
MAX_PAUSE_AFTER = 10_000


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _id_text(value: Any) -> str:
    return "" if value in (None, "") else str(value)


def _id(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() else None


def _clean(form: DeclaredForm) -> dict[str, Any]:
    return {k: v.strip() if isinstance(v, str) else v for k, v in form.values().items()
            if not is_blank(v.strip() if isinstance(v, str) else v)}


def _errors(forms: list[DeclaredForm]) -> int:
    return sum(len(f.errors) for form in forms for f in form)


@cache
def verifier_form_class(preset: str) -> type[DeclaredForm]:
    """A preset's options, generated from ``Verifier.settings_fields``."""
    fields = tuple((f.name, build_field(f)) for f in VERIFIERS[preset].settings_fields)
    return type(f"VerifySettings_{preset}", (DeclaredForm,), {"declared": fields})


def _place_in(form: DeclaredForm, where: list[str], message: str) -> bool:
    """On the field ``where`` names, else the one whose label starts the message, else the first."""
    names = list(form._fields)
    if not names:
        return False
    name = where[0] if where and where[0] in names else next(
        (n for n in names if message.startswith(str(form[n].label.text))), names[0])
    return form.add_error(name, message)


class ChoiceSection(DeclaredForm):
    """A section whose select (``choice_field``) picks one of several blocks of options;
    only the chosen block is validated and saved."""

    choice_field = ""
    blocks: dict[str, Any]
    posted: bool

    @property
    def chosen(self) -> str:
        return self[self.choice_field].data or ""

    @property
    def block(self) -> Any:
        return self.blocks.get(self.chosen)

    def block_forms(self, block: Any) -> list[DeclaredForm]:
        return [block]

    def validate(self, extra_validators: Any = None) -> bool:
        if not self.posted:
            return True
        super().validate(extra_validators)
        if self.block is not None:
            for form in self.block_forms(self.block):
                form.validate()
        return not self.error_count


class VerifyForm(ChoiceSection):
    choice_field = "preset"
    declared = (
        ("preset", SelectField(
            "Sender", choices=[], render_kw={"data-blocks": "verify-preset"},
            description="Requests not signed as this sender signs them get 401, are kept in the run "
                        "history as rejected, and never run.")),
        ("connection", SelectField(
            "Signing secret", choices=[], validate_choice=False,
            description="A webhook signing secret connection: the secret is stored encrypted and never "
                        "shown again; it holds a previous secret too while you rotate.")),
    )

    def __init__(self, settings: dict[str, Any] | None, connections: list[Connection],
                 formdata: MultiDict | None = None) -> None:
        self.stored = copy.deepcopy(dict(settings or {}))
        #: False when the post carries no such section: then settings stay as they were.
        self.posted = formdata is not None and f"{VERIFY_PREFIX}preset" in formdata
        data = formdata if self.posted else None
        cfg = _dict(self.stored.get("verify"))
        preset = str(cfg.get("preset") or "")
        super().__init__(data, {"preset": preset, "connection": _id_text(cfg.get("connection"))},
                         prefix=VERIFY_PREFIX)
        options = [("", "— none: accept every request —"), *((k, v.label) for k, v in VERIFIERS.items())]
        if preset and preset not in VERIFIERS:
            options.append((preset, f"unknown preset '{preset}'"))
        self["preset"].choices = choices(options)
        self.secrets = [c for c in connections if c.kind == SECRET_KIND]
        self["connection"].choices = choices([("", "— choose —"), *((str(c.id), c.name) for c in self.secrets)])
        self.verifiers = VERIFIERS
        self.blocks = {key: verifier_form_class(key)(data, _dict(cfg.get("settings")) if key == preset else None,
                                                     prefix=f"{VERIFY_PREFIX}{key}-")
                       for key in VERIFIERS}


    def apply(self, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` with ``verify`` as chosen (none removes it); every other key as it is."""
        out = copy.deepcopy(settings)
        if not self.posted:
            return out
        if not self.chosen:
            out.pop("verify", None)
            return out
        old = _dict(out.get("verify"))
        new = {k: v for k, v in old.items() if k not in ("preset", "connection", "settings")}
        new["preset"] = self.chosen
        new["connection"] = _id(self["connection"].data)
        new["settings"] = _clean(self.block) if self.block is not None else _dict(old.get("settings"))
        out["verify"] = new
        return out

    def place(self, where: list[str], message: str) -> bool:
        """Put an engine problem at ``settings.<where>`` on its field; False if none shows it."""
        if where in (["verify"], ["verify", "preset"]):
            return self.add_error("preset", message)
        if where == ["verify", "connection"]:
            return self.add_error("connection", message)
        if where[:2] == ["verify", "settings"]:
            block = self.block
            return (block is not None and _place_in(block, where[2:], message)) or self.add_error("preset", message)
        return False

    @property
    def error_count(self) -> int:
        return _errors([self, *self.blocks.values()])


class AlertConnectionForm(DeclaredForm):
    declared = (("connection", SelectField("Connection", choices=[], validate_choice=False)),)


@dataclass
class AlertBlock:
    """One alert action: its connection select and its generated inputs."""

    action: Action
    form: AlertConnectionForm
    inputs: DeclaredForm

    @property
    def needs_connection(self) -> bool:
        return self.action.credential is not None


class DeadRunForm(ChoiceSection):
    choice_field = "action"
    declared = (
        ("pause_after_dead", WholeNumberField(
            "Pause the recipe after N consecutive dead runs", low=0, high=MAX_PAUSE_AFTER,
            render_kw={"placeholder": str(DEFAULT_PAUSE_AFTER_DEAD)},
            description=f"Paused recipes keep new events as held runs, so resuming loses nothing. "
                        f"Empty: {DEFAULT_PAUSE_AFTER_DEAD}; 0 never pauses; at most {MAX_PAUSE_AFTER}.")),
        ("action", SelectField(
            "Alert", choices=[], render_kw={"data-blocks": "alert-action"},
            description="A step run each time a run goes dead.")),
    )

    def __init__(self, settings: dict[str, Any] | None, connections: list[Connection],
                 formdata: MultiDict | None = None) -> None:
        self.stored = copy.deepcopy(dict(settings or {}))
        self.posted = formdata is not None and f"{ALERT_PREFIX}action" in formdata
        data = formdata if self.posted else None
        alert = _dict(self.stored.get("alert"))
        chosen = str(alert.get("action") or "")
        super().__init__(data, {"pause_after_dead": self.stored.get("pause_after_dead"), "action": chosen},
                         prefix=ALERT_PREFIX)
        options = [("", "— none —"), *((k, a.label) for k, a in ALERT_ACTIONS.items())]
        if chosen and chosen not in ALERT_ACTIONS:
            options.append((chosen, f"{ACTIONS[chosen].label} (sends nothing)" if chosen in ACTIONS
                                    else f"unknown action '{chosen}'"))
        self["action"].choices = choices(options)
        self.blocks: dict[str, AlertBlock] = {}
        for key, action in ALERT_ACTIONS.items():
            mine = [c for c in connections if action.credential and c.kind == action.credential]
            if key == chosen:
                initial = {"connection": _id_text(alert.get("connection"))}
            else:
                only = len(mine) == 1 and action.credential_required
                initial = {"connection": str(mine[0].id) if only else ""}
            form = AlertConnectionForm(data, initial, prefix=f"{ALERT_PREFIX}{key}-")
            none = "— choose —" if action.credential_required else "— none —"
            form["connection"].choices = choices([("", none), *((str(c.id), c.name) for c in mine)])
            inputs = inputs_form_class(key)(data, _dict(alert.get("inputs")) if key == chosen else None,
                                            prefix=f"{ALERT_PREFIX}{key}-inputs-")
            self.blocks[key] = AlertBlock(action, form, inputs)

    def block_forms(self, block: AlertBlock) -> list[DeclaredForm]:
        return [block.form, block.inputs]

    def apply(self, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` with ``pause_after_dead`` and ``alert`` as posted; other keys as they are."""
        out = copy.deepcopy(settings)
        if not self.posted:
            return out
        limit = self["pause_after_dead"].data
        if limit is None:
            out.pop("pause_after_dead", None)
        else:
            out["pause_after_dead"] = limit
        if not self.chosen:
            out.pop("alert", None)
            return out
        old = _dict(out.get("alert"))
        new = {k: v for k, v in old.items() if k not in ("action", "connection", "inputs")}
        new["action"] = self.chosen
        if (block := self.block) is not None:
            new["connection"] = _id(block.form["connection"].data) if block.needs_connection else None
            new["inputs"] = {k: v for k, v in block.inputs.values().items() if not is_blank(v)}
        else:
            new["connection"], new["inputs"] = old.get("connection"), _dict(old.get("inputs"))
        out["alert"] = new
        return out

    def place(self, where: list[str], message: str) -> bool:
        if where == ["pause_after_dead"]:
            return self.add_error("pause_after_dead", message)
        if not where or where[0] != "alert":
            return False
        block = self.block
        if block is not None and where[1:2] == ["connection"]:
            return block.form.add_error("connection", message)
        if block is not None and where[1:2] == ["inputs"] and len(where) > 2:
            sub = ".".join(where[3:])
            if block.inputs.add_error(where[2], f"{sub}: {message}" if sub else message):
                return True
            message = f"{where[2]}: {message}"
        return self.add_error("action", message)

    @property
    def error_count(self) -> int:
        return _errors([self, *(f for b in self.blocks.values() for f in (b.form, b.inputs))])
