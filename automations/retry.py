"""When to try a failed run again. Pure functions: the runner stores the answer in the
database (``next_attempt_at``); nothing ever sleeps in a thread waiting to retry."""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# Seconds after attempt 1, 2, ... : spread over about a day, like the big webhook senders.
DEFAULT_SCHEDULE = (30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600)
DEFAULT_MAX_AGE = 3 * 24 * 3600
RETRY_AFTER_BOUNDS = (1.0, 6 * 3600.0)
JITTER = 0.2


@dataclass(frozen=True)
class RetryPolicy:
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    max_attempts: int = len(DEFAULT_SCHEDULE) + 1
    max_age_seconds: float = DEFAULT_MAX_AGE

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None) -> RetryPolicy:
        cfg = (settings or {}).get("retry") or {}
        schedule = tuple(float(s) for s in cfg.get("schedule") or DEFAULT_SCHEDULE)
        return cls(
            schedule=schedule,
            max_attempts=int(cfg.get("max_attempts") or len(schedule) + 1),
            max_age_seconds=float(cfg.get("max_age_seconds") or DEFAULT_MAX_AGE),
        )


def next_attempt_at(policy: RetryPolicy, attempts_done: int, created_at: datetime, now: datetime,
                    retry_after: float | datetime | None = None,
                    rng: random.Random | None = None) -> datetime | None:
    """The time of the next attempt, or None when the policy is exhausted (the run is dead).
    ``now`` is naive UTC; an aware ``retry_after`` instant is measured against it."""
    if attempts_done >= policy.max_attempts:
        return None
    if isinstance(retry_after, datetime):
        retry_after = (retry_after.astimezone(UTC).replace(tzinfo=None) - now).total_seconds()
    if retry_after is not None:
        lo, hi = RETRY_AFTER_BOUNDS
        delay = min(max(float(retry_after), lo), hi)
    else:
        base = policy.schedule[min(attempts_done - 1, len(policy.schedule) - 1)]
        delay = base * (1 + (rng or random).uniform(-JITTER, JITTER))
    when = now + timedelta(seconds=delay)
    if (when - created_at).total_seconds() > policy.max_age_seconds:
        return None
    return when


MAX_ATTEMPTS = 50
MAX_DELAY = 30 * 24 * 3600.0
MAX_AGE = 90 * 24 * 3600.0


def validate_settings(settings: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, message) for every problem in ``settings.retry``."""
    cfg = settings.get("retry")
    if cfg in (None, {}):
        return []
    if not isinstance(cfg, dict):
        return [("settings.retry", "must be a mapping: schedule, max_attempts, max_age_seconds")]
    problems = []
    schedule = cfg.get("schedule")
    if schedule is not None and not (
            isinstance(schedule, list) and 0 < len(schedule) <= MAX_ATTEMPTS
            and all(_number_in(s, 0.01, MAX_DELAY) for s in schedule)):
        problems.append(("settings.retry.schedule",
                         f"must be a list of 1 to {MAX_ATTEMPTS} delays in seconds, each up to 30 days"))
    attempts = cfg.get("max_attempts")
    if attempts not in (None, "") and not (_number_in(attempts, 1, MAX_ATTEMPTS) and isinstance(attempts, int)):
        problems.append(("settings.retry.max_attempts", f"must be a whole number from 1 to {MAX_ATTEMPTS}"))
    age = cfg.get("max_age_seconds")
    if age not in (None, "") and not _number_in(age, 1, MAX_AGE):
        problems.append(("settings.retry.max_age_seconds", "must be from 1 second to 90 days"))
    return problems


def _number_in(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
