"""What a recipe would send for a sample event, without sending anything: the form builder's
live preview.

It maps and renders exactly as a run does (the same ``extract``, ``build_context`` and
sandboxed templates), but field by field and input by input, so that one mistake shows on
its own line instead of hiding everything after it. Nothing is executed: an earlier step's
output is not known before that step runs, so it stands in as its name (``‹steps.crm.id›``).
Connection secrets never take part (templates cannot reach them).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from connectors.base import PermanentError
from connectors.registry import ACTIONS

from . import run_if
from .clock import utcnow
from .mapping import MappingError, extract
from .templating import TemplateError, build_context, reads_name, render_value


class Later(dict):
    """An earlier step's output in a preview, shown as its own path. Any key or attribute of it
    is another placeholder (``steps.crm.items`` too, which on a plain dict would be the
    method): a dict with every key, so the sandbox looks keys up as it does on real outputs."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def __missing__(self, key: Any) -> Later:
        named = isinstance(key, str) and key.isidentifier()
        return Later(f"{self.path}.{key}" if named else f"{self.path}[{key!r}]")

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and not key.startswith("_")

    def __str__(self) -> str:
        return f"‹{self.path}›"

    __repr__ = __str__


@dataclass
class InputPreview:
    name: str
    label: str
    value: Any = None
    error: str | None = None


@dataclass
class StepPreview:
    key: str
    action: str
    label: str
    inputs: list[InputPreview] = field(default_factory=list)
    error: str | None = None
    note: str | None = None  # flow steps: whether the run would stop here for this event


@dataclass
class Preview:
    fields: dict[str, Any] = field(default_factory=dict)
    field_errors: dict[str, str] = field(default_factory=dict)
    steps: list[StepPreview] = field(default_factory=list)


PREVIEW_SECONDS = 5.0  # for a whole preview: each render has its own limits, but a recipe has many inputs


def preview(definition: dict[str, Any], trigger: dict[str, Any], budget: float = PREVIEW_SECONDS) -> Preview:
    """Each field's value and each step's rendered inputs for ``trigger`` (as
    :func:`automations.executor.trigger_of` builds it from an event). Inputs left when
    ``budget`` seconds have gone are not rendered but say so: a recipe of many slow templates
    must not hold a web thread for minutes."""
    deadline = time.monotonic() + budget
    out = Preview()
    for spec in definition.get("fields") or []:
        name = spec.get("name") or ""
        try:
            out.fields.update(extract([spec], trigger.get("body")))
        except MappingError as exc:
            out.field_errors[name] = str(exc)
    earlier: dict[str, Any] = {}
    stopped_at: str | None = None
    for step in definition.get("steps") or []:
        key, action_key = str(step.get("key") or ""), str(step.get("action") or "")
        action = ACTIONS.get(action_key)
        if action is None:
            out.steps.append(StepPreview(key, action_key, action_key, error=f"unknown action '{action_key}'"))
            continue
        context = build_context(trigger, out.fields, earlier)
        raw = step.get("inputs") or {}
        shown = StepPreview(key, action_key, action.label)
        skipped = maybe = False  # its "only run if": false for the sample; or decided only in the run
        if stopped_at is not None:
            shown.note = f"not reached for this event: step '{stopped_at}' stops the run first"
        elif "run_if" in step:
            shown.note, skipped, maybe = _run_if_note(step["run_if"], context)
        rendered: dict[str, Any] = {}
        timed_out = False
        for f in action.fields:
            if not f.used_with(raw):
                continue  # the run ignores it: showing it would claim it is sent
            value = raw.get(f.name, f.default)
            item = InputPreview(f.name, f.label)
            if f.template and value is not None and time.monotonic() > deadline:
                item.error = f"not previewed: the preview took longer than {budget:g} s"
                timed_out = True
                shown.inputs.append(item)
                continue
            try:
                rendered[f.name] = render_value(value, context) if (f.template and value is not None) else value
                item.value = _plain(rendered[f.name])
            except (TemplateError, MappingError) as exc:
                item.error = str(exc)
            if item.value not in (None, "", [], {}) or item.error:
                shown.inputs.append(item)
        before = shown.note  # the step's own "only run if", said first
        if action.halts is not None and stopped_at is None and not timed_out and not skipped:  # no verdict unrendered
            if any(reads_name(v, "steps") for v in raw.values()):
                shown.note = "decided during the run: the condition uses an earlier step's output"
            elif any(i.error for i in shown.inputs):
                shown.note = ("stops the run for this event: the condition cannot be evaluated for it, "
                              "so the run would end as filtered")
                stopped_at = None if maybe else key  # a step that may be skipped stops nothing for sure
            elif action.halts(rendered):
                shown.note = "stops the run for this event: it would end as filtered, the later steps not run"
                stopped_at = None if maybe else key
            else:
                shown.note = "passes for this event: the run goes on"
        if action.waits is not None and stopped_at is None and not timed_out and not skipped:
            if any(reads_name(v, "steps") for v in raw.values()):
                shown.note = "decided during the run: the delay uses an earlier step's output"
            elif not any(i.error for i in shown.inputs):  # else the input's own error says it
                try:
                    shown.note = _wait_note(action.waits, rendered)
                except PermanentError as exc:
                    shown.error = exc.message
        if before and shown.note != before:
            shown.note = f"{before}; {'if it runs: ' if maybe else ''}{shown.note}"
        out.steps.append(shown)
        earlier[key] = Later(f"steps.{key}")
    return out


def _run_if_note(condition: Any, context: dict[str, Any]) -> tuple[str, bool, bool]:
    """What a step's "only run if" decides for the sample: the note, whether the step is
    skipped, and whether that is decided only during the run (it reads earlier steps)."""
    if reads_name(condition, "steps"):
        return "decided during the run: its condition uses an earlier step's output", False, True
    verdict = run_if.judge(condition, context)
    if verdict.skip:
        return f"skipped for this event: {verdict.skip}; the run goes on with the next step", True, False
    return "its condition holds for this event: this step runs", False, False


def _wait_note(waits: Any, rendered: dict[str, Any]) -> str:
    """How long a delay step would hold the run back for the sample event, measured from now;
    raises the delay's PermanentError when its inputs name no time."""
    now = utcnow()
    until = waits(rendered, now)
    seconds = (until - now).total_seconds()
    if seconds <= 0:
        return "the time has passed for this event: the run goes on at once"
    return f"waits {_span(seconds)} for this event (if it ran now: until {until.isoformat(timespec='seconds')}Z)"


def _span(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = round(seconds / size, 1)
            return f"{n:g} {unit}{'' if n == 1 else 's'}"
    n = max(round(seconds), 1)
    return f"{n} second{'' if n == 1 else 's'}"


def _plain(value: Any) -> Any:
    """Placeholders as the plain text they show, inside lists and dicts too."""
    if isinstance(value, Later):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
