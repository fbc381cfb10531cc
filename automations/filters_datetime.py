"""Date/time filters for recipe templates: read any common date form, convert zones, format, shift."""
from __future__ import annotations

import email.utils
import re
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Undefined

from automations.filters_common import _int_arg, _is_empty, _text

MAX_DATE_TEXT = 100

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMERIC = re.compile(r"[+-]?\d+(\.\d+)?")
_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})")
_STRFTIME_WIDTH = re.compile(r"%[-_0^#]*\d{3,}")


@lru_cache(maxsize=256)
def _named_zone(name: str) -> tzinfo:
    if name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    if m := _OFFSET.fullmatch(name):
        delta = timedelta(hours=int(m[2]), minutes=int(m[3]))
        return timezone(-delta if m[1] == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (use a name like 'Europe/Paris' or an offset like '+02:00')")


def _zone(tz: Any) -> tzinfo:
    if tz is None or isinstance(tz, Undefined):
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str) or len(tz) > 64:
        raise ValueError(f"unknown time zone {tz!r}")
    return _named_zone(tz.strip())


def _from_epoch(number: float) -> datetime:
    """Unix time; values too big for seconds are read as milliseconds, then microseconds (JS, Stripe...)."""
    try:
        if abs(number) >= 1e14:
            return _EPOCH + timedelta(microseconds=number)
        if abs(number) >= 1e11:
            return _EPOCH + timedelta(milliseconds=number)
        return _EPOCH + timedelta(seconds=number)
    except (OverflowError, ValueError):
        raise ValueError(f"timestamp {number!r} is out of range") from None


def _is_basic_date(text: str) -> bool:
    """'20240115' is a compact ISO date, not a 1970 timestamp."""
    return len(text) == 8 and text.isdigit() and 1900 <= int(text[:4]) <= 2100


def _parse_text(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        pass
    from dateutil import parser as dateutil_parser  # the last resort, loaded when first needed

    try:
        return dateutil_parser.parse(text)
    except (ValueError, OverflowError):
        raise ValueError(f"cannot read {text!r} as a date/time") from None


def parse_datetime(value: Any, tz: Any = None, fmt: str | None = None) -> datetime | None:
    """Any common date form -> aware datetime (naive values are read in `tz`, default UTC); empty -> None."""
    if _is_empty(value):
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time())
    elif isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return _from_epoch(value if isinstance(value, int) else float(value))
    elif isinstance(value, str):
        text = _text(value.strip(), MAX_DATE_TEXT)
        if fmt:
            parsed = datetime.strptime(text, _text(fmt, MAX_DATE_TEXT))
        elif _NUMERIC.fullmatch(text) and not _is_basic_date(text):
            return _from_epoch(float(text) if "." in text else int(text))
        else:
            parsed = _parse_text(text)
    else:
        raise TypeError(f"cannot read a date/time from a {type(value).__name__}")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_zone(tz))


def to_timezone(value: Any, tz: Any) -> datetime | None:
    """The same instant seen from another zone, e.g. to print local business hours."""
    zone, parsed = _zone(tz), parse_datetime(value)
    return None if parsed is None else parsed.astimezone(zone)


def format_datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M", tz: Any = "UTC") -> str:
    """Parse (if needed), convert to `tz`, format with strftime; empty in -> empty out."""
    fmt, zone = _text(fmt, 200), _zone(tz)  # check settings even when this payload has no date
    if _STRFTIME_WIDTH.search(fmt):
        raise ValueError("date format field widths above 99 are not allowed")
    parsed = parse_datetime(value)
    return "" if parsed is None else parsed.astimezone(zone).strftime(fmt)


def isoformat(value: Any, tz: Any = None) -> str:
    parsed = parse_datetime(value) if tz is None else to_timezone(value, tz)
    return "" if parsed is None else parsed.isoformat()


def timestamp(value: Any, milliseconds: bool = False) -> int | None:
    """Unix time as an int (seconds, or milliseconds for JavaScript-style APIs)."""
    parsed = parse_datetime(value)
    if parsed is None:
        return None
    delta = parsed - _EPOCH
    return delta // timedelta(milliseconds=1) if milliseconds else delta // timedelta(seconds=1)


def add_time(value: Any, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0,
             weeks: float = 0, months: int = 0, years: int = 0) -> datetime | None:
    """Shift a date; months/years follow the calendar (Jan 31 + 1 month = Feb 28/29)."""
    parsed = parse_datetime(value)
    if parsed is None:
        return None
    for name, amount in (("days", days), ("hours", hours), ("minutes", minutes), ("seconds", seconds),
                         ("weeks", weeks)):
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or abs(amount) > 1e9:
            raise ValueError(f"{name} must be a number of reasonable size, got {amount!r}")
    from dateutil.relativedelta import relativedelta

    shift = relativedelta(months=_int_arg("months", months, -120_000, 120_000),
                          years=_int_arg("years", years, -10_000, 10_000))
    try:
        return parsed + timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds, weeks=weeks) + shift
    except (OverflowError, ValueError):
        raise ValueError("resulting date is out of range") from None

