"""A step's "only run if": the branch of n8n's IF and Zapier's Paths, in a list of steps.

"Only continue if" ends the whole run; a condition on one step skips just that step and the
run goes on. Two steps with opposite conditions are an if/else ("paid" → the CRM, otherwise →
a Slack reminder); the condition may read earlier steps' output, so a step can run only when
an earlier call answered something.

The condition is written as "Only continue if"'s is (one ``{{ }}`` expression, checked when
the recipe is saved) and judged the same way (:func:`connectors.flow.passes`). One that cannot
be worked out for an event (it compares a value the event lacks) skips the step, with the
reason, as it filters the run there: the event is not one the step is for. A skipped step is
recorded (status ``skipped``, with why) and leaves no output: a later template that reads
``steps.<key>`` gets nothing, which ``{% if steps.<key> %}`` tells apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.flow import passes

from .templating import TemplateError, render_value


@dataclass(frozen=True)
class Verdict:
    value: Any  # what the condition rendered to (None if it could not be worked out)
    skip: str | None  # why the step does not run, or None if it runs


def judge(condition: Any, context: dict[str, Any]) -> Verdict:
    """Whether a step with this "only run if" runs for an event (``context``: the step's
    rendering context). No condition: it runs."""
    if condition is None:
        return Verdict(None, None)
    try:
        value = render_value(condition, context)
    except TemplateError as exc:
        return Verdict(None, f"its condition could not be evaluated for this event ({exc})")
    return Verdict(value, None if passes(value) else "its condition was false")
