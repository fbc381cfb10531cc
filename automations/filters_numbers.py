"""Number and money filters for recipe templates: read numbers as people type them, format per locale.

Babel is imported by the first formatting call, not with the module: a process whose recipes
format no numbers (most runner children) need not load it."""
from __future__ import annotations

import copy
import math
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from automations.filters_common import _int_arg, _is_empty, _text

if TYPE_CHECKING:
    from babel import Locale
    from babel.numbers import NumberPattern

MAX_DECIMALS = 20


def to_number(value: Any) -> int | float | None:
    """Read numbers as people type them: '1,234.50', '1.234,50', '$ 12', '(3.5)' for negatives."""
    if _is_empty(value):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    text = re.sub(r"[\s\u00a0\u202f'_]", "", _text(value, 100))
    negative = text.startswith("(") and text.endswith(")")
    text = re.sub(r"^[^\d+\-.,]+|[^\d.,]+$", "", text.strip("()"))
    if "," in text and "." in text:
        text = text.replace(".", "").replace(",", ".") if text.rfind(",") > text.rfind(".") else text.replace(",", "")
    elif "," in text:
        head, _, tail = text.partition(",")
        is_thousands = text.count(",") > 1 or (len(tail) == 3 and head.lstrip("+-") not in ("", "0"))
        text = text.replace(",", "") if is_thousands else f"{head}.{tail}"
    elif text.count(".") > 1:
        text = text.replace(".", "")
    try:
        number = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    except ValueError:
        raise ValueError(f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return -number if negative else number


def _decimal(value: Any) -> Decimal:
    number = to_number(value)
    try:
        result = Decimal(str(number))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not result.is_finite() or result.adjusted() > 30:
        raise ValueError(f"number too large to format: {value!r}")
    return result


@lru_cache(maxsize=128)
def _locale(name: str) -> Locale:
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(name.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise ValueError(f"unknown locale {name!r} (use a code like 'en_US' or 'de_DE')") from None


def _round(number: Decimal, decimals: int) -> Decimal:
    """Round half up (what invoices do), not babel's default half-even."""
    return number.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _with_decimals(pattern: NumberPattern, decimals: int) -> NumberPattern:
    """The locale's own pattern (grouping, spacing: '1,23,456' in hi_IN, '25,6 %' in de_DE), fixed decimals."""
    pattern = copy.copy(pattern)
    pattern.frac_prec = (decimals, decimals)
    return pattern


def format_number(value: Any, decimals: int = 2, locale: str = "en_US") -> str:
    """Thousands separators and decimal mark of the locale: 1234.5 -> '1,234.50' / de_DE '1.234,50'."""
    import babel.numbers

    decimals, babel_locale = _int_arg("decimals", decimals, 0, MAX_DECIMALS), _locale(str(locale))
    if _is_empty(value):
        return ""
    pattern = _with_decimals(babel_locale.decimal_formats[None], decimals)
    return babel.numbers.format_decimal(_round(_decimal(value), decimals), format=pattern,
                                        locale=babel_locale, decimal_quantization=False)


def format_money(value: Any, currency: str = "USD", locale: str = "en_US", minor_units: bool = False) -> str:
    """Currency amount for humans; minor_units=True reads Stripe-style integers (1999 USD, 100 JPY)."""
    import babel.numbers

    code, babel_locale = str(currency).strip().upper(), _locale(str(locale))
    if code not in babel.numbers.list_currencies():
        raise ValueError(f"unknown currency {currency!r} (use an ISO 4217 code like 'EUR')")
    if _is_empty(value):
        return ""
    digits = babel.numbers.get_currency_precision(code)
    amount = _decimal(value)
    if minor_units:
        amount = amount.scaleb(-digits)
    return babel.numbers.format_currency(_round(amount, digits), code, locale=babel_locale)


def percent(value: Any, decimals: int = 0, locale: str = "en_US") -> str:
    """A ratio as a percentage: 0.256 -> '26%'."""
    import babel.numbers

    decimals, babel_locale = _int_arg("decimals", decimals, 0, MAX_DECIMALS), _locale(str(locale))
    if _is_empty(value):
        return ""
    pattern = _with_decimals(babel_locale.percent_formats[None], decimals)
    return babel.numbers.format_percent(_round(_decimal(value) * 100, decimals) / 100, format=pattern,
                                        locale=babel_locale, decimal_quantization=False)

