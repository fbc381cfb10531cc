"""The recipe editor's "Delivery" section: de-duplication and retries (``settings.dedupe``,
``settings.retry``).

The section edits only the keys it shows. Everything else in ``settings`` (and in
``settings.dedupe`` / ``settings.retry``, such as an imported ``schedule``) is kept as it
was, and a stored value the form cannot express exactly (a window of 10 minutes) is kept as
stored until someone changes its text.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from werkzeug.datastructures import MultiDict
from wtforms import SelectField

from automations.dedupe import DEFAULT_WINDOW
from automations.retry import DEFAULT_MAX_AGE, DEFAULT_SCHEDULE, JITTER

from .form_fields import DeclaredForm, TextField, choices

__all__ = ["DeliveryForm"]

PREFIX = "delivery-"
HOUR = 3600
MAX_HOURS = 90 * 24
MAX_ATTEMPTS = 50
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)
PLACEHOLDERS = {"header": "X-GitHub-Delivery", "path": "$.id"}
ANY_PLACEHOLDER = "X-GitHub-Delivery or $.id"
# Where the engine's problems (``Problem.where`` after "settings.") are shown.
_WHERE = {("dedupe",): "dedupe_by", ("dedupe", "header"): "dedupe_key", ("dedupe", "path"): "dedupe_key",
          ("dedupe", "window_seconds"): "dedupe_window", ("retry",): "retry_attempts",
          ("retry", "max_attempts"): "retry_attempts", ("retry", "max_age_seconds"): "retry_age"}


def _duration(seconds: float) -> str:
    for size, unit in ((HOUR, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


class WholeNumberField(TextField):
    """A whole number from ``low`` to ``high`` typed in units of ``scale`` and stored in base
    units (hours typed, seconds stored). Text left as displayed keeps the stored value as is."""

    def __init__(self, *args: Any, low: int = 1, high: int, scale: int = 1, **kw: Any) -> None:
        kw["render_kw"] = {**(kw.get("render_kw") or {}), "inputmode": "numeric"}
        super().__init__(*args, **kw)
        self.low, self.high, self.scale = low, high, scale

    def format(self, value: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{value / self.scale:g}"
        return "" if value is None else str(value)

    def process_formdata(self, valuelist: list[str]) -> None:
        text = (valuelist[0] if valuelist else "").strip()
        if text and text == self.format(self.object_data):
            self.data = self.object_data  # untouched: never round a stored value
            return
        self.data = None
        if not text:
            return
        if not text.isdigit() or not self.low <= int(text) <= self.high:
            raise ValueError(f"must be a whole number from {self.low} to {self.high}")
        self.data = int(text) * self.scale


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


class DeliveryForm(DeclaredForm):
    declared = (
        ("dedupe_by", SelectField(
            "Drop repeated deliveries by",
            choices=choices([("none", "— nothing: run every delivery"), ("header", "a header"),
                             ("path", "a JSONPath in the body")]))),
        ("dedupe_key", TextField(
            "Header name or JSONPath", render_kw={"placeholder": ANY_PLACEHOLDER},
            description="Where the sender puts its delivery id. A repeat within the window gets 200 "
                        "with the first run's id and creates no run.")),
        ("dedupe_window", WholeNumberField(
            "Window (hours)", high=MAX_HOURS, scale=HOUR, render_kw={"placeholder": f"{DEFAULT_WINDOW // HOUR}"},
            description=f"How long a delivery id is remembered: {DEFAULT_WINDOW // HOUR} hours by default, at most "
                        f"{MAX_HOURS} (90 days).")),
        ("retry_attempts", WholeNumberField(
            "Max attempts", high=MAX_ATTEMPTS, render_kw={"placeholder": str(len(DEFAULT_SCHEDULE) + 1)},
            description=f"Tries in all, the first one included. Empty: {len(DEFAULT_SCHEDULE) + 1}, "
                        f"retrying after {', '.join(map(_duration, DEFAULT_SCHEDULE))} "
                        f"(each ±{JITTER:.0%} jitter).")),
        ("retry_age", WholeNumberField(
            "Give up after (hours)", high=MAX_HOURS, scale=HOUR, render_kw={"placeholder": f"{DEFAULT_MAX_AGE // HOUR}"},
            description=f"A run still failing this long after its event arrived is marked dead. "
                        f"Empty: {DEFAULT_MAX_AGE // HOUR} hours; at most {MAX_HOURS} (90 days).")),
    )

    def __init__(self, settings: dict[str, Any] | None, formdata: MultiDict | None = None) -> None:
        self.stored = copy.deepcopy(dict(settings or {}))
        #: False when the post carries no Delivery section: then settings stay as they were.
        self.posted = formdata is not None and f"{PREFIX}dedupe_by" in formdata
        super().__init__(formdata if self.posted else None, self._initial(), prefix=PREFIX)
        # The placeholder follows the select (hookline.js switches it as the select changes).
        key = self["dedupe_key"]
        key.render_kw = {**(key.render_kw or {}),
                         **{f"data-placeholder-{k}": v for k, v in {**PLACEHOLDERS, "none": ANY_PLACEHOLDER}.items()},
                         "placeholder": PLACEHOLDERS.get(self["dedupe_by"].data, ANY_PLACEHOLDER)}

    def _initial(self) -> dict[str, Any]:
        dedupe, retry = _dict(self.stored.get("dedupe")), _dict(self.stored.get("retry"))
        by = "header" if dedupe.get("header") else "path" if dedupe.get("path") else "none"
        window = dedupe.get("window_seconds")
        return {
            "dedupe_by": by, "dedupe_key": dedupe.get(by) if by != "none" else "",
            "dedupe_window": DEFAULT_WINDOW if window in (None, "") else window,
            "retry_attempts": retry.get("max_attempts"), "retry_age": retry.get("max_age_seconds"),
        }

    @property
    def custom_schedule(self) -> list[Any] | None:
        """An imported ``settings.retry.schedule``, which this form shows but does not edit."""
        schedule = _dict(self.stored.get("retry")).get("schedule")
        return schedule if schedule else None

    def validate(self, extra_validators: Any = None) -> bool:
        super().validate(extra_validators)
        by, key = self["dedupe_by"].data, (self["dedupe_key"].data or "").strip()
        if by == "none":
            self["dedupe_window"].errors = []  # not used: never block a save over it
        elif not key:
            self.add_error("dedupe_key", "enter a header name" if by == "header" else "enter a JSONPath")
        elif by == "header" and not _TOKEN.match(key):
            self.add_error("dedupe_key", "a header name has letters, digits and '-', no spaces or ':'")
        return not any(f.errors for f in self)

    def apply(self, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` with the section's values in place; every other key left as it is."""
        out = copy.deepcopy(settings)
        if not self.posted:
            return out
        self._apply_dedupe(out)
        retry = _dict(out.get("retry"))
        for key, name in (("max_attempts", "retry_attempts"), ("max_age_seconds", "retry_age")):
            value = self[name].data
            if value is None:
                retry.pop(key, None)
            else:
                retry[key] = value
        if retry:
            out["retry"] = retry
        else:
            out.pop("retry", None)
        return out

    def _apply_dedupe(self, out: dict[str, Any]) -> None:
        old = out.get("dedupe")
        by, key = self["dedupe_by"].data, (self["dedupe_key"].data or "").strip()
        if by not in PLACEHOLDERS:
            out.pop("dedupe", None)
            return
        old = _dict(old)
        new = {k: v for k, v in old.items() if k not in ("header", "path", "window_seconds")}
        new[by] = key
        window = self["dedupe_window"].data
        if window is None:
            window = DEFAULT_WINDOW
        if not (window == DEFAULT_WINDOW and old and "window_seconds" not in old):
            new["window_seconds"] = window  # an imported default stays implicit
        out["dedupe"] = new

    def place(self, where: list[str], message: str) -> bool:
        """Put an engine problem at ``settings.<where>`` on its field; False if none shows it."""
        name = _WHERE.get(tuple(where))
        return name is not None and self.add_error(name, message)
