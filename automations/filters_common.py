"""Helpers shared by the template filter modules (filters, filters_datetime, filters_numbers).

Values come from webhook payloads, so every filter takes strings, numbers or None alike, treats a
missing value (None, "" or Jinja's Undefined) as empty rather than failing the whole run, and rejects
absurd input with a ValueError that tells the recipe author what to fix.
"""
from __future__ import annotations

from typing import Any

from jinja2 import Undefined

MAX_TEXT = 1_000_000  # characters any text filter accepts


def _is_empty(value: Any) -> bool:
    return value is None or isinstance(value, Undefined) or (isinstance(value, str) and not value.strip())


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    text = "" if value is None or isinstance(value, Undefined) else str(value)
    if len(text) > limit:
        raise ValueError(f"text too long ({len(text)} characters, at most {limit})")
    return text


def _int_arg(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number between {low} and {high}, got {value!r}")
    return value

