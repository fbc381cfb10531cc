"""Flow control: "Only continue if" (Zapier's Filter, n8n's IF with one branch).

A step like any other, declared once, so the form builder, validation, preview and docs come
from the declaration. Its ``halts`` says, from the rendered inputs alone, whether the run ends
at this step: the executor then finishes the run as ``filtered`` (not failed: nothing went
wrong, the event was not one to act on) and the later steps do not run. The preview asks the
same function, so what the editor shows is what a run does.
"""
from __future__ import annotations

from typing import Any

from .base import Action, ActionContext, ActionResult, Field

# Rendered text that means "no" (a template that is not a single expression renders text).
FALSE_TEXT = frozenset({"", "false", "no", "off", "0", "none", "null"})


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
            Field("condition", "Condition", required=True,
                  placeholder="{{ trigger.headers['x-github-event'] == 'push' and amount > 100 }}",
                  help=("A template; the run goes on when it is true. False, empty, 0, none, and the words "
                        "false / no / off stop it. Compare with ==, !=, <, >, in, and, or, not.")),
        ),
    ),
)
CREDENTIALS = ()
