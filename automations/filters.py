"""Formatter filters for recipe templates: the text and JSON chores, and `FILTERS`, every filter by name.

Date/time filters live in filters_datetime, number and money filters in filters_numbers; the conventions
all filters follow (payload values in, empty stays empty, ValueError for absurd input) in filters_common.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import re._constants as _sre  # the pattern parser: reject catastrophic shapes
import re._parser as _sre_parse
import unicodedata
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jinja2 import Undefined

from automations.filters_common import MAX_TEXT, _int_arg, _is_empty, _text
from automations.filters_datetime import (
    add_time,
    format_datetime,
    isoformat,
    parse_datetime,
    timestamp,
    to_timezone,
)
from automations.filters_numbers import format_money, format_number, percent, to_number

if TYPE_CHECKING:
    import regex as regex_engine

MAX_REGEX_INPUT = 100_000  # regexes may backtrack: keep their input short
MAX_PATTERN = 500
MAX_REGEX_SECONDS = 1.0  # per regex call; backtracking shapes the parser check misses stop here


# --- text ----------------------------------------------------------------------------------------------

def slugify(value: Any, separator: str = "-") -> str:
    ascii_text = unicodedata.normalize("NFKD", _text(value)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", separator, ascii_text.lower()).strip(separator)


def truncate_chars(value: Any, length: int = 255, end: str = "…") -> str:
    """Cut to at most `length` characters including `end` (for fields with a hard limit, like SMS)."""
    text = _text(value)
    length = _int_arg("length", length, 0, MAX_TEXT)
    if len(text) <= length:
        return text
    end = _text(end, length)
    return text[: length - len(end)].rstrip() + end


def strip_html(value: Any) -> str:
    """Readable text from an HTML email/body: tags and scripts dropped, entities decoded, blocks on new lines."""
    from automations.filters_html import TextExtractor  # html.parser: loaded by the first use

    extractor = TextExtractor()
    extractor.feed(_text(value))
    extractor.close()
    text = re.sub(r"[ \t\r\f\v]+", " ", "".join(extractor.parts))
    return re.sub(r" ?\n[ \n]*\n", "\n\n", re.sub(r" *\n *", "\n", text)).strip()


def split(value: Any, sep: str | None = None, maxsplit: int = -1) -> list[str]:
    return _text(value).split(sep or None, _int_arg("maxsplit", maxsplit, -1, MAX_TEXT))


def _nested_repeat(items: Any, inside: bool = False) -> bool:
    """Does a parsed pattern repeat a repetition, like `(a+)+`? Those backtrack exponentially."""
    for op, arg in items:
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            repeats = arg[1] > 1
            if (repeats and inside) or _nested_repeat(arg[2], inside or repeats):
                return True
        elif op == _sre.POSSESSIVE_REPEAT:  # never backtracks itself, but may hold a nested repeat
            if _nested_repeat(arg[2], inside):
                return True
        elif op in (_sre.SUBPATTERN, _sre.ASSERT, _sre.ASSERT_NOT, _sre.ATOMIC_GROUP, _sre.BRANCH):
            subs = arg[1] if op == _sre.BRANCH else [arg[-1]] if op != _sre.ATOMIC_GROUP else [arg]
            if any(_nested_repeat(sub, inside) for sub in subs):
                return True
    return False


@lru_cache(maxsize=256)
def _regex(pattern: Any, ignorecase: bool) -> regex_engine.Pattern:
    """Compile an author's pattern; refuse nested repetition (the usual catastrophic-backtracking
    shape). Patterns run on the ``regex`` engine, whose matching can be given a deadline (it is
    imported by the first pattern: 1.5 MiB that recipes without one need not pay)."""
    import regex as regex_engine

    text = _text(pattern, MAX_PATTERN)
    try:
        if _nested_repeat(_sre_parse.parse(text)):
            raise ValueError("regular expression repeats a repetition, like '(a+)+', which can take forever; "
                             "make the inner one possessive: '(a++)+'")
        return regex_engine.compile(text, regex_engine.IGNORECASE if ignorecase else 0)
    except (re.error, regex_engine.error) as exc:
        raise ValueError(f"invalid regular expression: {getattr(exc, 'msg', exc)}") from None


def _timed(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, timeout=MAX_REGEX_SECONDS, **kwargs)
    except TimeoutError:
        raise ValueError(f"regular expression took longer than {MAX_REGEX_SECONDS:g} s "
                         "(it backtracks too much on this input); simplify it") from None


def regex_replace(value: Any, pattern: str, repl: str = "", count: int = 0, ignorecase: bool = False) -> str:
    import regex as regex_engine  # the engine _regex compiles with (for its error type)
    text, compiled, repl = _text(value, MAX_REGEX_INPUT), _regex(pattern, ignorecase), _text(repl, MAX_TEXT)
    count = _int_arg("count", count, 0, MAX_TEXT)
    if (len(repl) * (len(text) + 1) > MAX_TEXT
            and len(repl) * len(_timed(compiled.findall, text)) > MAX_TEXT):
        raise ValueError("replacement result would be too large")
    try:
        return _timed(compiled.sub, repl, text, count=count)
    except (re.error, regex_engine.error, IndexError) as exc:
        raise ValueError(f"invalid replacement {repl!r}: {exc}") from None


def regex_search(value: Any, pattern: str, group: int | str = 0, ignorecase: bool = False) -> str | None:
    """The first match (or one group of it); None when nothing matches."""
    match = _timed(_regex(pattern, ignorecase).search, _text(value, MAX_REGEX_INPUT))
    try:
        return None if match is None else match.group(group)
    except IndexError:
        raise ValueError(f"regular expression has no group {group!r}") from None


def regex_findall(value: Any, pattern: str, ignorecase: bool = False) -> list:
    return _timed(_regex(pattern, ignorecase).findall, _text(value, MAX_REGEX_INPUT))


def default_if_empty(value: Any, fallback: Any = "") -> Any:
    """Like `default`, but payloads send null, "", [] or {} for "not set", not a missing key."""
    if _is_empty(value) or (isinstance(value, (list, dict, tuple)) and not value):
        return fallback
    return value


def _name_parts(value: Any) -> tuple[str, str]:
    """'Ada King Lovelace' -> ('Ada', 'King Lovelace'); 'Lovelace, Ada' -> ('Ada', 'Lovelace')."""
    text = " ".join(_text(value, 1000).split())
    if "," in text:
        last, _, first = text.partition(",")
        return first.strip(), last.strip()
    first, _, last = text.partition(" ")
    return first, last


def first_name(value: Any) -> str:
    return _name_parts(value)[0]


def last_name(value: Any) -> str:
    return _name_parts(value)[1]


def to_bool(value: Any) -> bool:
    """Form posts send 'on', 'yes', 'true', '1'; anything else empty or falsy is False."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "on", "t")
    return bool(value) and not isinstance(value, Undefined)


# --- JSON, lists, encodings ----------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Undefined):
        return None
    if isinstance(value, (set, frozenset, tuple)) or hasattr(value, "__next__"):
        return list(value)
    raise TypeError(f"a {type(value).__name__} cannot be written as JSON")


def to_json(value: Any, indent: int | None = None) -> str:
    if indent is not None:
        indent = _int_arg("indent", indent, 0, 8)
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)


def from_json(value: Any) -> Any:
    """Parse JSON text (e.g. a form field carrying JSON); already-parsed values pass through."""
    if not isinstance(value, (str, bytes)):
        return None if isinstance(value, Undefined) else value
    if len(value) > MAX_TEXT:
        raise ValueError(f"JSON text too long ({len(value)} characters, at most {MAX_TEXT})")
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def _dig(item: Any, key: str) -> Any:
    for part in str(key).split("."):
        item = item.get(part) if isinstance(item, dict) else None
    return item


def pluck(items: Any, key: str) -> list:
    """`line_items | pluck('price.id')` -> one value per item (dotted keys reach into objects)."""
    return [_dig(item, key) for item in (items or [])]


def sum_by(items: Any, key: str) -> int | float:
    """Total of one key over a list of objects, reading numeric strings too."""
    values = [to_number(_dig(item, key)) for item in (items or [])]
    return sum(v for v in values if v is not None)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else _text(value).encode("utf-8")


def b64encode(value: Any, urlsafe: bool = False) -> str:
    raw = _bytes(value)
    return (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode("ascii")


def b64decode(value: Any) -> str:
    text = _text(value).strip()
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
        return raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not valid base64-encoded UTF-8 text") from None


def _digest(name: str) -> Callable[[Any], str]:
    def digest(value: Any) -> str:
        return hashlib.new(name, _bytes(value)).hexdigest()

    digest.__name__ = name
    digest.__doc__ = f"Hex {name} of the UTF-8 text (ad APIs want `email | trim | lower | sha256`)."
    return digest


def hmac_sha256(value: Any, key: Any) -> str:
    """Sign an outgoing body for receivers that verify HMAC signatures."""
    return hmac.new(_bytes(key), _bytes(value), hashlib.sha256).hexdigest()


FILTERS: dict[str, Callable[..., Any]] = {
    "parse_datetime": parse_datetime, "format_datetime": format_datetime, "to_timezone": to_timezone,
    "timestamp": timestamp, "add_time": add_time, "isoformat": isoformat,
    "to_number": to_number, "format_number": format_number, "format_money": format_money, "percent": percent,
    "slugify": slugify, "truncate_chars": truncate_chars, "strip_html": strip_html, "split": split,
    "regex_replace": regex_replace, "regex_search": regex_search, "regex_findall": regex_findall,
    "default_if_empty": default_if_empty, "first_name": first_name, "last_name": last_name, "to_bool": to_bool,
    "to_json": to_json, "from_json": from_json, "pluck": pluck, "sum_by": sum_by,
    "b64encode": b64encode, "b64decode": b64decode, "md5": _digest("md5"), "sha1": _digest("sha1"),
    "sha256": _digest("sha256"), "hmac_sha256": hmac_sha256,
}
