"""Flow control: "Only continue if" (Zapier's Filter, n8n's IF with one branch).

A step like any other, declared once, so the form builder, validation, preview and docs come
from the declaration. Its ``halts`` says, from the rendered inputs alone, whether the run ends
at this step: the executor then finishes the run as ``filtered`` (not failed: nothing went
wrong, the event was not one to act on) and the later steps do not run. The preview asks the
same function, so what the editor shows is what a run does. A condition that cannot be
evaluated for an event (``amount > 100`` on an event without an amount: None > 100) also
ends the run as filtered, with the reason: filtering out the events that lack what the
condition looks at is what such a condition is for, and the preview shows the error on the
sample while the recipe is edited.
"""
from __future__ import annotations

from typing import Any

from .base import Action, ActionContext, ActionResult, Field

# Rendered text that means "no" (a template that is not a single expression renders text).
FALSE_TEXT = frozenset({"", "false", "no", "off", "0", "none", "null"})


def condition_problem(value: Any) -> str | None:
    """Checked when a recipe is saved: the condition must be one ``{{ … }}`` expression. Text
    around or between expressions renders as text, which is never false ("amount > 100" typed
    without braces, or "{{ a }} and {{ b }}"), so such a filter would let every event through."""
    text = value.strip() if isinstance(value, str) else None
    inner = text[2:-2] if text and text.startswith("{{") and text.endswith("}}") else None
    if inner is None or not inner.strip() or any(t in inner for t in ("{{", "}}", "{%", "%}", "{#", "#}")):
        return "write the condition as one expression in {{ }}, e.g. {{ amount > 100 and status == 'paid' }}"
    return None


def passes(value: Any) -> bool:
    """The condition's verdict: Python truth, plus the words above for text."""
    if isinstance(value, str):
        return value.strip().lower() not in FALSE_TEXT
    return bool(value)


def halts(inputs: dict[str, Any]) -> bool:
    return not passes(inputs.get("condition"))


def run(ctx: ActionContext) -> ActionResult:
    return ActionResult(output={"passed": passes(ctx.inputs.get("condition"))})


ACTIONS = (
    Action(
        key="filter", label="Only continue if", group="Flow", run=run, halts=halts,
        description=("Stop the run here unless a condition holds, e.g. only paid orders over 100. The run then "
                     "ends as 'filtered' and the later steps do not run; earlier steps have run already."),
        fields=(
            Field("condition", "Condition", required=True, check=condition_problem,
                  placeholder="{{ trigger.headers['x-github-event'] == 'push' and amount > 100 }}",
                  help=("One expression in {{ }}; the run goes on when it is true. False, empty, 0, none, and "
                        "the words false / no / off stop it. Compare with ==, !=, <, >, in, and, or, not. A "
                        "condition that cannot be worked out for an event (a value it compares is missing, "
                        "or text where a number was expected) stops the run too, with the reason.")),
        ),
    ),
)
CREDENTIALS = ()
