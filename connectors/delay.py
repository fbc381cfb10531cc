"""Flow control: "Delay for" and "Delay until" (Zapier's Delay, n8n's Wait).

A delay does not sleep anywhere. The step records when the run goes on; the executor then
puts the run back in the queue, due at that time, with no lease and its attempt not counted,
and the runner claims it like any due run when the time comes. So a run waiting a week holds
no thread and survives restarts, and the steps before the delay are not sent again (they are
checkpointed as after any step). Both actions are declared once, as any connector; their
``waits`` answers "when does the next step run?" for the executor and for the preview.
"""
from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from automations.clock import utcnow
from automations.filters_datetime import parse_datetime

from .base import Action, ActionContext, ActionResult, Field, PermanentError

MAX_DELAY = timedelta(days=30)  # as Zapier's Delay: a longer wait is a schedule, not a delay
UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 7 * 86400}


def amount_problem(value: Any) -> str | None:
    """Checked when a recipe is saved, for an amount typed as a number (a template is checked
    when it runs)."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return None
    try:
        _amount(value)
    except PermanentError as exc:
        return exc.message
    return None


def _amount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise PermanentError(f"amount must be a number, not {type(value).__name__}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise PermanentError(f"amount must be a number, not {str(value)[:40]!r}") from None
    if not math.isfinite(number) or number < 0:
        raise PermanentError(f"amount must be a number from 0 up, not {str(value)[:40]!r}")
    return number


def _capped(until: datetime, now: datetime) -> datetime:
    if until - now > MAX_DELAY:
        raise PermanentError(f"a delay can last at most {MAX_DELAY.days} days; this one ends "
                             f"{until.isoformat(timespec='seconds')}Z")
    return until


def delay_for_ends(inputs: dict[str, Any], now: datetime) -> datetime:
    """``now`` plus the amount in its unit."""
    unit = inputs.get("unit") or "minutes"
    if unit not in UNIT_SECONDS:
        raise PermanentError(f"unit must be one of {', '.join(UNIT_SECONDS)}, not {str(unit)[:40]!r}")
    seconds = _amount(inputs.get("amount")) * UNIT_SECONDS[unit]
    if seconds > MAX_DELAY.total_seconds():
        raise PermanentError(f"a delay can last at most {MAX_DELAY.days} days, not {seconds / 86400:g} days")
    return now + timedelta(seconds=seconds)


def delay_until_ends(inputs: dict[str, Any], now: datetime) -> datetime:
    """The date/time given, read as the ``parse_datetime`` filter reads it (ISO 8601, RFC 2822,
    Unix seconds or milliseconds...; without an offset, in ``timezone``), in naive UTC. A time
    already past is returned as it is: the run goes on at once."""
    value = inputs.get("until")
    try:
        when = parse_datetime(value, inputs.get("timezone") or "UTC")
    except (ValueError, TypeError, OverflowError) as exc:
        raise PermanentError(f"until: {exc}") from None
    if when is None:
        raise PermanentError("until is empty for this event: no time to wait for")
    return _capped(when.astimezone(UTC).replace(tzinfo=None), now)


def _zone_problem(value: Any) -> str | None:
    try:
        parse_datetime("2000-01-01T00:00:00", value or "UTC")
    except ValueError as exc:
        return str(exc)
    return None


def _output(until: datetime, now: datetime) -> dict[str, Any]:
    """What later steps see as ``steps.<key>``: when the run went on, and how long it waited."""
    return {"until": until.isoformat(timespec="seconds") + "Z",
            "waited_seconds": max(0.0, round((until - now).total_seconds(), 3))}


def _runner(waits: Any) -> Any:
    def run(ctx: ActionContext) -> ActionResult:
        now = ctx.now or utcnow()
        return ActionResult(output=_output(waits(ctx.inputs, now), now))
    return run


_CAP = f"At most {MAX_DELAY.days} days. "
_HOW = ("The run waits in the queue, not in a worker: it survives restarts, and the steps before "
        "this one are not sent again. Pausing the recipe holds a waiting run; resuming it keeps the "
        "time the wait ends.")

ACTIONS = (
    Action(
        key="delay_for", label="Delay for", group="Flow", run=_runner(delay_for_ends), waits=delay_for_ends,
        description=("Wait a while before the next step, e.g. send the follow-up email two days after the "
                     "sign-up. " + _HOW),
        fields=(
            Field("amount", "Amount", required=True, check=amount_problem, placeholder="15",
                  help=_CAP + "A number, or a template that gives one: {{ trial_days }}."),
            Field("unit", "Unit", type="select", template=False, default="minutes",
                  choices=tuple((u, u) for u in UNIT_SECONDS)),
        ),
    ),
    Action(
        key="delay_until", label="Delay until", group="Flow", run=_runner(delay_until_ends),
        waits=delay_until_ends,
        description=("Wait until a date and time before the next step, e.g. one hour before an appointment. "
                     "A time already past goes on at once. " + _HOW),
        fields=(
            Field("until", "Until", required=True, placeholder="{{ appointment_at | add_time(hours=-1) }}",
                  help=(_CAP + "A date/time as the parse_datetime filter reads it: ISO 8601 "
                        "(2026-12-01T09:00:00+01:00), RFC 2822, or Unix seconds or milliseconds.")),
            Field("timezone", "Time zone", template=False, default="UTC", placeholder="Europe/Paris",
                  help="For a date/time written without an offset, e.g. Europe/Paris or +02:00.",
                  check=_zone_problem),
        ),
    ),
)
CREDENTIALS = ()
