"""Stage 1 of a recipe's mapping: pull named fields out of the trigger payload with JSONPath.

Paths are written by recipe authors, payloads come from strangers: paths are compiled once and
cached, syntax errors name the position, and nothing here ever evaluates payload text.
"""
from __future__ import annotations

import functools
import operator
import re
from typing import Any

from jsonpath_ng import JSONPath, jsonpath
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext import parse as _parse
from jsonpath_ng.ext.arithmetic import Operation
from jsonpath_ng.ext.string import DefintionInvalid

MAX_PATH_LENGTH = 1000
#: Cap on a string/list built by arithmetic inside a path (`$.name * 1000000000` on a payload string).
MAX_PATH_VALUE_SIZE = 1_000_000
#: How many indexes of each array `sample_paths` lists (index 0 only: the builder maps lists with `[*]`).
SAMPLE_ARRAY_ITEMS = 1

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Bare words the JSONPath lexer gives a meaning of its own; such keys are always quoted.
_RESERVED_WORDS = frozenset({"where", "wherenot", "true", "false", "null", "and", "or", "not", "in"})
_PARSER_AT = re.compile(r"Parse error at (\d+):(\d+) near token (.*?) \(.*\)$", re.DOTALL)
_OPERATOR = re.compile(r"Unknown named operator `(.*)`")
_LEXER_AT = re.compile(r"Error on line (\d+), col (\d+).*Unexpected character: (.)", re.DOTALL)


class MappingError(Exception):
    """A field could not be extracted; names the field so the run history points at the culprit."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"field {self.field!r}: {self.message}" if self.field else self.message


class PathSyntaxError(ValueError):
    """A JSONPath that does not parse; `position` is 1-based when the parser could tell."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


def _absolute_position(path: str, line: int, col: int) -> int:
    """jsonpath-ng counts columns from the latest newline; turn that into a 1-based offset."""
    start = 0
    for _ in range(line - 1):
        start = path.find("\n", start + 1)
        if start < 0:
            return col + 1
    return start + col + 1


def _syntax_message(path: str, exc: Exception) -> PathSyntaxError:
    text = str(exc).strip()
    if m := _PARSER_AT.match(text):
        pos = _absolute_position(path, int(m[1]), int(m[2]))
        return PathSyntaxError(f"unexpected {m[3]!r} at position {pos}", pos)
    if m := _LEXER_AT.match(text):
        pos = _absolute_position(path, int(m[1]), int(m[2]))
        return PathSyntaxError(f"unexpected character {m[3]!r} at position {pos}", pos)
    if m := _OPERATOR.match(text):
        pos = path.find(f"`{m[1]}`") + 1 or None
        return PathSyntaxError(f"unknown operator `{m[1]}` at position {pos} (known: len, keys, sorted, str())", pos)
    if isinstance(exc, re.error):
        return PathSyntaxError(f"invalid regular expression in path: {exc.msg}")
    end = len(path) + 1
    if "end of string" in text:
        return PathSyntaxError(f"path ends too early at position {end} (unclosed bracket or dangling '.'?)", end)
    if "EOF in string literal" in text:
        return PathSyntaxError(f"unclosed quote: path ends at position {end} inside a quoted name", end)
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return PathSyntaxError(f"invalid path: {first_line[:200]}")


def _guarded(op: Any) -> Any:
    """Wrap a path arithmetic operator so payload values cannot make it build huge strings or lists."""

    def run(left: Any, right: Any) -> Any:
        if op is operator.mul:
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list)) and isinstance(n, int) and len(seq) * n > MAX_PATH_VALUE_SIZE:
                    raise ValueError("repetition result too large")
        return op(left, right)

    return run


def _guard_arithmetic(node: Any, seen: set[int] | None = None) -> None:
    """Walk the compiled path and guard every arithmetic node (instance-level, library untouched)."""
    seen = set() if seen is None else seen
    if id(node) in seen or not hasattr(node, "__dict__"):
        return
    seen.add(id(node))
    if isinstance(node, Operation):
        node.op = _guarded(node.op)
    for child in vars(node).values():
        for item in child if isinstance(child, (list, tuple)) else (child,):
            if isinstance(item, JSONPath) or type(item).__module__.startswith("jsonpath_ng"):
                _guard_arithmetic(item, seen)


def compile_path(path: str) -> JSONPath:
    """Parse a JSONPath once (cached); raises PathSyntaxError whose message names the position."""
    if path is not None and not isinstance(path, str):
        raise PathSyntaxError(f"path must be text, not {type(path).__name__}")
    return _compile(path or "")


@functools.lru_cache(maxsize=4096)
def _compile(path: str) -> JSONPath:
    if not path.strip():
        raise PathSyntaxError("path is empty")
    if len(path) > MAX_PATH_LENGTH:
        raise PathSyntaxError(f"path is too long ({len(path)} characters, at most {MAX_PATH_LENGTH})")
    if not path.lstrip().startswith("$"):
        raise PathSyntaxError("path must start with '$' (the document root), e.g. '$.data.email'", 1)
    try:
        compiled = _parse(path)
    except (JSONPathError, DefintionInvalid, re.error, ValueError, TypeError) as exc:
        raise _syntax_message(path, exc) from None
    _guard_arithmetic(compiled)
    return compiled


def validate_path(path: str) -> str | None:
    """None when the path compiles, else a message for the form (includes the position when known)."""
    try:
        compile_path(path)
    except PathSyntaxError as exc:
        return exc.message
    return None


@functools.lru_cache(maxsize=4096)
def _plain_keys(path: str) -> tuple[str, ...] | None:
    """The keys of a path that only names object members (``$``, ``$.data.email``,
    ``$['a b'].c``), or None. Most recipes' paths are such, and looking the keys up directly
    costs a fraction of jsonpath-ng's walk, with the same answer: a member is found only in
    an object, and a member whose value is null is a match (tests/test_mapping.py compares)."""
    node, keys = _compile(path), []
    while type(node) is jsonpath.Child and type(node.right) is jsonpath.Fields and len(node.right.fields) == 1:
        key = node.right.fields[0]
        if not isinstance(key, str) or key == "*" or key == jsonpath.auto_id_field:
            return None
        keys.append(key)
        node = node.left
    return tuple(reversed(keys)) if type(node) is jsonpath.Root else None


def _find_plain(keys: tuple[str, ...], document: Any) -> list[Any]:
    for key in keys:
        if not isinstance(document, dict) or key not in document:
            return []
        document = document[key]
    return [document]


def extract(fields: list[dict], document: Any) -> dict[str, Any]:
    """Evaluate each field's path: no match -> default, one match -> the value as-is, several -> a list."""
    result: dict[str, Any] = {}
    for field in fields:
        name = field.get("name")
        path = field.get("path")
        try:
            compiled = compile_path(path)
        except PathSyntaxError as exc:
            raise MappingError(name, f"invalid path {path!r}: {exc.message}") from None
        keys = _plain_keys(path)
        try:
            values = _find_plain(keys, document) if keys is not None else [m.value for m in compiled.find(document)]
        except Exception as exc:  # a filter comparing mismatched types, a bad regex on odd data...
            raise MappingError(name, f"path {path!r} failed on this payload: {type(exc).__name__}: {exc}") from exc
        if not values:
            result[name] = field.get("default")
        elif len(values) == 1:
            result[name] = values[0]
        else:
            result[name] = values
    return result


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return "string"


def _child_path(parent: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    key = str(key)
    if _IDENTIFIER.fullmatch(key) and key.lower() not in _RESERVED_WORDS:
        return f"{parent}.{key}"
    quoted = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{parent}['{quoted}']"


def sample_paths(document: Any, limit: int = 500) -> list[dict]:
    """List the paths of a captured sample, in reading order, for the no-code field picker.

    Every object and array gets an entry (`value` None plus `size`, so big payloads stay small) and so
    does every leaf (with its value). Arrays list element 0 only (`SAMPLE_ARRAY_ITEMS`): the builder offers
    `[*]` for "all items". Keys that are not plain identifiers are quoted as `$['content-type']`.
    """
    if document is None:
        return []
    out: list[dict] = []
    stack: list[tuple[str, Any]] = [("$", document)]
    while stack and len(out) < limit:
        path, value = stack.pop()
        kind = _type_name(value)
        if kind == "object":
            out.append({"path": path, "value": None, "type": kind, "size": len(value)})
            children = [(_child_path(path, k), v) for k, v in value.items()]
        elif kind == "array":
            out.append({"path": path, "value": None, "type": kind, "size": len(value)})
            children = [(_child_path(path, i), v) for i, v in enumerate(value[:SAMPLE_ARRAY_ITEMS])]
        else:
            out.append({"path": path, "value": value, "type": kind})
            children = []
        stack.extend(reversed(children))
    return out
