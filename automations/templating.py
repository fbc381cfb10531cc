"""Stage 2 of a recipe's mapping: render action inputs with Jinja2 in a sandbox.

Templates are written by recipe authors and evaluated on payloads sent by anyone, so they run in the
hardened environment of `automations.sandbox` (size checks before allocation, a per-render work budget).
Payload values are only ever data: nothing from a payload is compiled as a template.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.exceptions import SecurityError

from automations.filters import FILTERS
from automations.jsonable import plain
from automations.sandbox import (
    MAX_OUTPUT_SIZE,  # render defaults, read from this module so tests and callers can set templating.MAX_WORK
    MAX_WORK,
    Budget,
    GuardedEnvironment,
    LimitExceeded,
    check,
    harden,
    materialize,
    render_budget,
)

MAX_SOURCE_SIZE = 100_000
RESERVED_NAMES = frozenset({"trigger", "fields", "steps", "now", "loop", "self", "caller", "varargs", "kwargs",
                            "range", "dict", "namespace", "cycler", "joiner"})

_SYNTAX = re.compile(r"\{[{%#]")
_SINGLE = re.compile(r"\s*\{\{(?P<body>.*?)\}\}\s*", re.DOTALL)


class TemplateError(Exception):
    """A template that does not compile or fails on this data; `lineno` is the template line if known."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.lineno = lineno

    def __str__(self) -> str:
        return f"line {self.lineno}: {self.message}" if self.lineno else self.message


def now() -> datetime:
    """Current time, aware UTC (a recipe context may override it with the runner's clock)."""
    return datetime.now(UTC)


def _finalize(value: Any) -> Any:
    return "" if value is None else check(value)  # a JSON null prints as nothing, not "None"


_ENV = GuardedEnvironment(autoescape=False, undefined=jinja2.ChainableUndefined, keep_trailing_newline=True,
                          finalize=_finalize)
_ENV.globals.update(now=now)
harden(_ENV, FILTERS)


def _check_source(source: str) -> None:
    if len(source) > MAX_SOURCE_SIZE:
        raise TemplateError(f"template too long ({len(source)} characters, at most {MAX_SOURCE_SIZE})")


@functools.lru_cache(maxsize=1024)
def _template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


@functools.lru_cache(maxsize=1024)
def _expression(body: str) -> Any:
    return _ENV.compile_expression(body, undefined_to_none=False)


def _single_expression(source: str) -> str | None:
    """The expression of a source that is exactly one `{{ ... }}`, else None."""
    match = _SINGLE.fullmatch(source)
    if match is None or any(token in match["body"] for token in ("{{", "}}", "{%", "{#", "%}", "#}")):
        return None
    return match["body"].removeprefix("-").removeprefix("+").removesuffix("-").removesuffix("+")


def _limits(max_output: int | None, max_work: int | None) -> AbstractContextManager[Budget]:
    """The render budget; defaults are read here at call time, so `templating.MAX_WORK = ...` takes effect."""
    return render_budget(max_output if max_output is not None else MAX_OUTPUT_SIZE,
                         max_work if max_work is not None else MAX_WORK)


def _template_line(exc: BaseException) -> int | None:
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _as_template_error(exc: Exception, lineno: int | None) -> TemplateError:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return TemplateError(exc.message or "syntax error", exc.lineno if lineno is None else lineno)
    if isinstance(exc, (LimitExceeded, SecurityError, jinja2.UndefinedError, ValueError)):
        message = str(exc)
    elif isinstance(exc, RecursionError):
        message = "too deeply nested (recursion or nesting too deep)"
    elif isinstance(exc, MemoryError):
        message = "out of memory"
    else:
        message = f"{type(exc).__name__}: {exc}"
    return TemplateError(message, lineno or _template_line(exc))


def _keep_type(result: Any) -> Any:
    if isinstance(result, jinja2.Undefined):
        return None
    if isinstance(result, str):
        return str(result)  # Markup -> plain str
    if isinstance(result, range) or hasattr(result, "__next__"):
        result = materialize(result)  # map/select generators become lists
    return plain(result)  # dates as ISO 8601 text, Decimals as numbers: what every connector sends


def render(source: str, context: dict, *, max_output: int | None = None, max_work: int | None = None) -> Any:
    """Render one template. A lone `{{ expr }}` keeps its type (list, number, None...); else a string.

    Text without Jinja syntax is returned untouched (fast path: most inputs are constants).
    """
    if not isinstance(source, str) or not _SYNTAX.search(source):
        return source
    _check_source(source)
    body = _single_expression(source)
    lineno = source[: source.index("{{")].count("\n") + 1 if body is not None else None
    with _limits(max_output, max_work) as budget:
        try:
            if body is not None:
                return check(_keep_type(_expression(body)(**context)))
            parts, total = [], 0
            for chunk in _template(source).generate(context):
                total += len(chunk)
                if total > budget.max_size:
                    raise LimitExceeded(f"output too large (limit {budget.max_size} characters)")
                parts.append(chunk)
            return "".join(parts)
        except TemplateError:
            raise
        except Exception as exc:
            raise _as_template_error(exc, lineno) from exc


def render_inputs(fields: Iterable[Any], raw_inputs: dict[str, Any], context: dict) -> dict[str, Any]:
    """An action's inputs for a run (or an alert): each declared field the run uses, its saved
    value (or default) rendered when it is a template. ``fields``: connectors.base.Field."""
    out: dict[str, Any] = {}
    for f in fields:
        if not f.used_with(raw_inputs):
            continue
        value = raw_inputs.get(f.name, f.default)
        out[f.name] = render_value(value, context) if (f.template and value is not None) else value
    return out


def render_value(value: Any, context: dict, *, max_output: int | None = None,
                 max_work: int | None = None) -> Any:
    """Render a whole action-input structure: strings are templates, dicts/lists are walked, rest kept.
    One budget for the whole structure."""
    if isinstance(value, str):
        return render(value, context, max_output=max_output, max_work=max_work)
    if not isinstance(value, (dict, list, tuple)):
        return value
    if not value:  # a new empty one, as a walk would make
        return {} if isinstance(value, dict) else []
    with _limits(max_output, max_work):
        return _walk(value, context)


def _walk(value: Any, context: dict) -> Any:
    """:func:`render_value` inside its budget (entered once, not at every level)."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, dict):
        return {(str(render(k, context)) if isinstance(k, str) and _SYNTAX.search(k) else k):
                _walk(v, context) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(item, context) for item in value]
    return value


def validate_template(source: str) -> str | None:
    """None when the template compiles, else "line N: message"; unknown filters/tests are errors too."""
    if not isinstance(source, str):
        return "template must be text"
    try:
        _check_source(source)
        tree = _ENV.parse(source)
        for node in tree.find_all((nodes.Filter, nodes.Test)):
            kind, table = ("filter", _ENV.filters) if isinstance(node, nodes.Filter) else ("test", _ENV.tests)
            if node.name not in table:
                return str(TemplateError(f"unknown {kind} {node.name!r}", node.lineno))
        for node in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
            return str(TemplateError("include, extends and import are not available in recipe templates", node.lineno))
        _template(source)
    except TemplateError as exc:
        return str(exc)
    except jinja2.TemplateSyntaxError as exc:
        return str(_as_template_error(exc, None))
    return None


def reads_name(source: Any, name: str) -> bool:
    """Whether template ``source`` reads the variable ``name`` (``steps`` in
    ``{{ steps.a.body.ok }}``, not in ``{{ trigger.body.steps_total }}``); False when it does
    not parse."""
    if not isinstance(source, str) or "{" not in source:
        return False
    try:
        return name in jinja2.meta.find_undeclared_variables(_ENV.parse(source))
    except (jinja2.TemplateError, TemplateError):
        return False


def build_context(trigger: dict, fields: dict, steps: dict, *, now: Callable[[], datetime] | None = None
                  ) -> dict[str, Any]:
    """The variables a recipe renders against; fields are also top-level (`{{ email }}`) unless reserved."""
    fields = fields or {}
    context = {k: v for k, v in fields.items() if isinstance(k, str) and k not in RESERVED_NAMES}
    context.update(trigger=trigger or {}, fields=fields, steps=steps or {})
    if now is not None:
        context["now"] = now
    return context
