"""The sandbox every recipe template runs in: Jinja's own, plus size and work guards.

Templates come from users, so a template may fail its run but must never hang or exhaust a worker: operations
that can amplify data are size-checked *before* they allocate, and a per-render work budget (loop iterations,
calls, data processed) stops runaway templates; attribute escapes fail loudly.
"""
from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

MAX_OUTPUT_SIZE = 1024 * 1024  # characters in a rendered value (and in any value built while rendering)
MAX_WORK = 50_000  # loop iterations + calls + KiB of data processed, per render
MAX_RENDER_SECONDS = 2.0  # wall clock per top-level render, checked whenever work is charged
MAX_RANGE = 10_000
MAX_INT_BITS = 10_000
MAX_FIELD_WIDTH = 1_000  # padding/precision in %-formatting, str.format, center...

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")

class LimitExceeded(Exception):
    pass


@dataclass
class Budget:
    max_size: int
    work_left: int
    deadline: float = float("inf")  # time.monotonic() value


_BUDGET: ContextVar[Budget | None] = ContextVar("hookline_template_budget", default=None)


def _charge(units: int) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.work_left -= units
        if budget.work_left < 0:
            raise LimitExceeded("template does too much work (loop iterations, calls, data processed)")
        if time.monotonic() > budget.deadline:
            raise LimitExceeded(f"template took longer than {MAX_RENDER_SECONDS:g} s to render")


def _cap() -> int:
    budget = _BUDGET.get()
    return budget.max_size if budget is not None else MAX_OUTPUT_SIZE


def _measure(value: Any, cap: int) -> tuple[int, int]:
    """(printed size, elements visited): shared references count each time, as str() would; stops past cap."""
    total, elements, stack = 0, 0, [value]
    while stack and total <= cap:
        item = stack.pop()
        elements += 1
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, (dict, list, tuple, set, frozenset)):
            total += 2 * len(item) + 2
            if total <= cap:
                stack.extend(item.keys() if isinstance(item, dict) else item)
                if isinstance(item, dict):
                    stack.extend(item.values())
        elif isinstance(item, Namespace):
            stack.append(item._Namespace__attrs)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        else:
            total += 8
    return total, elements


def _size(value: Any, cap: int) -> int:
    return _measure(value, cap)[0]


def _need(estimate: int, what: str) -> None:
    if estimate > _cap():
        raise LimitExceeded(f"{what} would be too large (limit {_cap()} characters)")


def check(value: Any) -> Any:
    """Charge the budget for a value the template produced, and refuse an oversized one."""
    _need(_consume(value), "value")
    return value


def _consume(value: Any) -> Any:
    """Charge the budget for reading a value; payload values may exceed the output limit, so no refusal."""
    size, elements = _measure(value, _cap())
    _charge(1 + size // 1024 + elements // 32)
    return size


def _consumed(value: Any) -> Any:
    _consume(value)
    return value


def _guarded_iter(value: Any) -> Iterator[Any]:
    for item in value:
        _charge(1)
        yield item


def materialize(value: Any) -> list:
    items, total = [], 0
    for item in _guarded_iter(value):
        total += _size(item, _cap()) + 8
        _need(total, "sequence")
        items.append(item)
    return items


def _field_width(number: str) -> int:
    if len(number) > 6 or int(number) > MAX_FIELD_WIDTH:
        raise LimitExceeded(f"field widths above {MAX_FIELD_WIDTH} are not allowed")
    return int(number)


def _percent_estimate(fmt: str, values: Any) -> int:
    specs = _PERCENT_SPEC.findall(fmt)
    if any("*" in spec for spec in specs):
        raise LimitExceeded("'*' field widths are not supported in templates")
    widest = max((_field_width(n) for spec in specs for n in spec if n), default=0)
    return len(fmt) + len(specs) * (_size(values, _cap()) + widest)


def _replace_estimate(text: str, old: str, new: str, count: Any = None) -> int:
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def _join_estimate(items: Any, sep: Any) -> int:
    return _size(items, _cap()) + len(items) * len(str(sep)) if hasattr(items, "__len__") else 0


def _int_or(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) else default


def _width_of(indent: Any) -> int:
    return len(indent) if isinstance(indent, str) else _int_or(indent)


def _lines(text: Any) -> int:
    return str(text).count("\n") + 1


# Filters whose output can be far bigger than their input: estimate the output before running them.
# Each mirrors the filter's public signature (piped value first, Jinja's context argument removed).
_AMPLIFIERS: dict[str, Callable[..., int]] = {
    "center": lambda value, width=80, *_, **__: _int_or(width),
    "indent": lambda s, width=4, *_, **__: len(str(s)) + _lines(s) * _width_of(width),
    "wordwrap": lambda s, width=79, _b=True, wrapstring=None, *_, **__: len(str(s))
    + (len(str(s)) // max(_int_or(width, 1), 1) + 1) * len(str(wrapstring or "\n")),
    "replace": lambda s, old, new, count=None, **_: _replace_estimate(str(s), str(old), str(new), count),
    "join": lambda value, d="", *_, **__: _join_estimate(value, d),
    "batch": lambda value, linecount, *_, **__: 8 * _int_or(linecount),
    "slice": lambda value, slices, *_, **__: 8 * _int_or(slices),
    "format": lambda value, *args, **kwargs: _percent_estimate(str(value), kwargs or args),
}


def _guard_filter(name: str, func: Callable[..., Any], check_result: bool = True) -> Callable[..., Any]:
    """Charge for the inputs, refuse amplifying arguments, and size-check the result of a filter or test."""
    amplifier = _AMPLIFIERS.get(name)
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context/environment argument

    @functools.wraps(func)  # keeps Jinja's pass_context/pass_environment marker
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            _consume(value)
        if amplifier is not None:
            if name == "join" and len(args) > skip and hasattr(args[skip], "__next__"):
                args = (*args[:skip], materialize(args[skip]), *args[skip + 1:])
            try:
                estimate = amplifier(*args[skip:], **kwargs)
            except TypeError:
                estimate = 0  # wrong arguments: let the filter report them in its own words
            _need(estimate, f"'{name}'")
        result = func(*args, **kwargs)
        return check(result) if check_result else result

    return guarded


def _guard_method_call(func: Any, args: tuple, kwargs: dict) -> None:
    """str/bytes/int methods that allocate in proportion to an argument."""
    owner, name = getattr(func, "__self__", None), getattr(func, "__name__", "")
    if isinstance(owner, (str, bytes)):
        if name in ("translate", "maketrans"):
            raise SecurityError(f"str.{name}() is not available in templates")
        first = args[0] if args else next(iter(kwargs.values()), 0)
        if name in ("ljust", "rjust", "center", "zfill"):
            _need(_int_or(first), f"str.{name}()")
        elif name == "expandtabs":
            _need(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * _int_or(first, 8), name)
        elif name == "replace" and len(args) >= 2 and isinstance(owner, str):
            _need(_replace_estimate(owner, str(args[0]), str(args[1]), args[2] if len(args) > 2 else None), name)
        elif name == "join" and args:
            _need(_join_estimate(args[0], owner), "str.join()")
    elif isinstance(owner, int) and name == "to_bytes":
        _need(_int_or(args[0] if args else kwargs.get("length", 1)), "int.to_bytes()")


class _GuardedFormatter(SandboxedFormatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in re.findall(r"\d+", format_spec):
            _field_width(number)
        return super().format_field(value, format_spec)


def _guarded_binop(operator: str, func: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints and right > 0 and abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
        raise LimitExceeded(f"power result too large (over {MAX_INT_BITS} bits)")
    if operator == "*":
        if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise LimitExceeded(f"product too large (over {MAX_INT_BITS} bits)")
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int) and times > 1:
                _need(_size(seq, _cap() // times + 1) * times, "repetition")
    if operator == "+" and isinstance(left, (str, bytes, list, tuple)) and type(left) is type(right):
        _need(_size(left, _cap()) + _size(right, _cap()), "concatenation")
    if operator == "%" and isinstance(left, str):
        _need(_percent_estimate(left, right), "formatted string")
    result = func(left, right)
    return result if isinstance(result, (int, float)) else check(result)


class _Guards(NodeTransformer):
    """Rewrites the parsed template so loops, literals, `~`, comparisons and slices go through checks."""

    @staticmethod
    def _wrap(node: nodes.Expr, name: str) -> nodes.Filter:
        return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = self._wrap(node.iter, "_hl_iter")
        return node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Compare:
        self.generic_visit(node)
        node.expr = self._wrap(node.expr, "_hl_consume")
        for operand in node.ops:
            operand.expr = self._wrap(operand.expr, "_hl_consume")
        return node

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Getitem:
        self.generic_visit(node)
        if isinstance(node.arg, nodes.Slice):
            node.node = self._wrap(node.node, "_hl_consume")
        return node

    def _checked(self, node: nodes.Expr) -> nodes.Expr:
        self.generic_visit(node)
        return node if getattr(node, "ctx", "load") != "load" else self._wrap(node, "_hl_check")

    visit_Concat = visit_List = visit_Tuple = visit_Dict = _checked


class _GuardedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        _Guards().visit(node)
        super().visit_Template(node, frame)


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with binops, calls and str.format size-checked; see also harden()."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _GuardedCodeGenerator

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return _guarded_binop(operator, self.binop_table[operator], left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _charge(1)
        _guard_method_call(obj, args, kwargs)
        return check(super().call(context, obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`fields.items` means the payload's "items" key, not dict.items (Stripe, Shopify... send such keys)."""
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if super().wrap_str_format(value) is None:
            return None
        template, formatter = value.__self__, _GuardedFormatter(self)
        is_map = value.__name__ == "format_map"

        def guarded_format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            _need(len(template) + template.count("{") * (_size((args, kwargs), _cap()) + MAX_FIELD_WIDTH),
                  "str.format()")
            return check(formatter.vformat(template, args, kwargs))

        return guarded_format


def _safe_range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise LimitExceeded(f"range() is limited to {MAX_RANGE} items")
    return result

def harden(env: Environment, filters: dict[str, Callable[..., Any]]) -> None:
    """Add `filters` to a GuardedEnvironment and put every filter and test behind the guards."""
    env.globals.pop("lipsum", None)
    env.globals.update(range=_safe_range)
    for name in ("pprint", "urlize"):  # unbounded output for little use in automations
        env.filters.pop(name, None)
    env.filters.update(filters)
    env.filters.update({name: _guard_filter(name, func) for name, func in env.filters.items()})
    env.tests.update({name: _guard_filter(name, func, check_result=False) for name, func in env.tests.items()})
    env.filters.update(_hl_iter=_guarded_iter, _hl_check=check, _hl_consume=_consumed)


@contextlib.contextmanager
def render_budget(max_output: int, max_work: int) -> Iterator[Budget]:
    """One budget per top-level render; nested renders (render_value) share it."""
    current = _BUDGET.get()
    if current is not None:
        yield current
        return
    new = Budget(max_output, max_work, time.monotonic() + MAX_RENDER_SECONDS)
    token = _BUDGET.set(new)
    try:
        yield new
    finally:
        _BUDGET.reset(token)
