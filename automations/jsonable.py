"""Values as JSON can hold them. A template that is one expression keeps its type, and the
date and number filters return dates and Decimals, which neither the JSON columns nor the
connectors' JSON encoding accept: a date becomes ISO 8601 text (as n8n and Zapier pass dates
around), a Decimal a number."""
from __future__ import annotations

import math
from datetime import date, time
from decimal import Decimal
from typing import Any


def json_default(value: Any) -> Any:
    """For ``json.dumps(default=...)``: what a value JSON has no form for is stored as."""
    if isinstance(value, (date, time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)  # NaN or Infinity: not JSON (PostgreSQL refuses it)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def plain(value: Any) -> Any:
    """``value`` with its dates and Decimals, inside lists and dicts too, in their JSON form;
    anything else as it is (returns ``value`` itself when nothing needed changing)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        items = {k: plain(v) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if isinstance(value, list):
        out = [plain(v) for v in value]
        return value if all(a is b for a, b in zip(out, value)) else out
    if isinstance(value, (date, time, Decimal)):
        return json_default(value)
    return value


def finite(value: Any) -> Any:
    """``value`` with NaN and the infinities, inside lists and dicts too, as their text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
