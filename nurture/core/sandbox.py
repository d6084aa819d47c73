"""The sandbox marketer code runs in, with a budget: templates and ``when`` conditions.

Jinja's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` keeps a template
away from our objects' internals, but not from our CPU and memory: nested
``range(100000)`` loops run for hours and ``'x' * 10**10`` asks for 10 GB. Every
render (and every condition) runs inside a
:class:`~nurture.core.budget.Budget` (:mod:`nurture.core.budget`) that bounds:

* **time**: a wall-clock deadline, checked at every loop iteration, call and
  include. A plain check, no signal: it works in any thread (the worker
  renders in pool threads), and a stopped render simply raises
  :class:`~nurture.core.budget.BudgetExceeded`. Past the deadline the render is stopped only if it
  really spent the time itself: pauses of the garbage collector's full
  collections do not count, and a render whose thread had less than a quarter
  of the deadline in CPU time was waiting for the processor (a loaded
  machine, other threads), not looping, so it goes on. Ten times the deadline
  stops anything;
* **steps**: loop iterations plus calls (macros, methods, ``loop()``
  recursion, includes);
* **output**: the characters a render produces, estimated as it goes (each
  ``{{ value }}``, the literal text of a loop body per iteration, each
  included template), so text piled up inside ``{% set %}`` blocks or macros
  counts before it is ever joined;
* **values**: no single string, list or number made by an operator or filter
  (``*``, ``**``, ``+``, ``%``, ``~``, ``center``, ``join``, ``replace``, ...)
  may exceed a size, and the check happens *before* the allocation.

How the hooks get in: ``call``, ``call_binop`` and ``get_template`` are the
sandbox's interception points; loops and ``~`` are rewritten in the parsed
tree (``_generate``, Jinja's hook for that) so their operands pass through a
budget filter; the value checks (:func:`check_size` and the operators') are
here too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes, pass_context, pass_environment, pass_eval_context
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from nurture.core.budget import (
    CURRENT_BUDGET,
    BudgetExceeded,
    active_limits,
)

_LOOP = "__nurture_loop__"  # filter names no template can write (not identifiers)
_CONCAT = "__nurture_concat__"


def check_size(size: int, what: str) -> None:
    """Refuse to make a value of ``size`` characters/items (before making it)."""
    limit = active_limits().value
    if size > limit:
        raise BudgetExceeded(f"{what} would make a value of {size} items (limit {limit})")


SIZED = _SIZED = (str, list, tuple, dict)  # values whose len() is their printed size, roughly


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, _SIZED) else 0


def _check_bits(bits: int) -> None:
    limit = active_limits().int_bits
    if bits > limit:
        raise BudgetExceeded(f"a number of about {bits} bits (limit {limit})")


# printf widths/precisions ("%10000000s") and str.format ones ("{:>10000000}").
_SPEC_NUMBER = re.compile(r"%[-#0 +]*(\d*)(?:\.(\d+))?|\{[^{}]*?:[^{}]*?(\d+)[^{}]*\}")


def _check_format(spec: str) -> None:
    for match in _SPEC_NUMBER.finditer(spec):
        for number in match.groups():
            if number and (len(number) > 9 or int(number) > active_limits().value):
                raise BudgetExceeded(f"a format width of {number} (limit {active_limits().value})")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                check_size(len(seq) * max(times, 0), "'*'")
        if isinstance(left, int) and isinstance(right, int):
            _check_bits(left.bit_length() + right.bit_length())
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            _check_bits(max(left.bit_length() - 1, 0) * right if abs(left) > 1 else 1)
    elif operator == "+":
        check_size(_sized(left) + _sized(right), "'+'")
    elif operator == "%" and isinstance(left, str):
        _check_format(left)
        values = right if isinstance(right, tuple | dict) else (right,)
        check_size(len(left) + sum(_sized(v) for v in values), "'%'")


@pass_context
def _loop(context: Context, iterable: Any, weight: int = 0) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this: one step (and the body's text) per item."""
    budget = CURRENT_BUDGET.get()
    if budget is None:
        yield from iterable
        return
    for item in iterable:
        budget.step(weight)
        yield item


@pass_eval_context
def _concat(eval_ctx: EvalContext, pieces: list[Any]) -> str:
    """``a ~ b``: the pieces' size is checked before they are joined."""
    texts = [p if isinstance(p, str) else str(p) for p in pieces]
    check_size(sum(len(t) for t in texts), "'~'")
    return markup_join(pieces) if eval_ctx.autoescape else str_join(pieces)


def _constant_text(node: nodes.Node) -> int:
    return sum(len(data.data) for data in node.find_all(nodes.TemplateData))


class _Budgeting(NodeTransformer):
    """Routes every loop's items and every ``~`` through the budget filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        body = sum(_constant_text(n) for n in node.body)
        node.iter = nodes.Filter(
            node.iter, _LOOP, [nodes.Const(body)], [], None, None, lineno=node.iter.lineno
        )
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        operands = nodes.List(list(node.nodes), lineno=node.lineno)
        return nodes.Filter(operands, _CONCAT, [], [], None, None, lineno=node.lineno)


# ---------------------------------------------------------------- filters and globals


def _center(value: Any, width: int = 80) -> str:
    check_size(max(width, len(str(value))), "center")
    return str(value).center(width)


def _indent(value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = str(value)
    pad = width if isinstance(width, int) else len(str(width))
    check_size(len(text) + (text.count("\n") + 1) * max(pad, 0), "indent")
    return _ORIGINAL_FILTERS["indent"](value, width, first, blank)  # type: ignore[no-any-return]


def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    check_size(len(str(d)) * len(items) + sum(_sized(i) for i in items), "join")
    return _ORIGINAL_FILTERS["join"](eval_ctx, items, d, attribute)  # type: ignore[no-any-return]


def _replace_filter(
    eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None
) -> str:
    _check_replace(str(s), str(old), str(new), count)
    return _ORIGINAL_FILTERS["replace"](eval_ctx, s, old, new, count)  # type: ignore[no-any-return]


def _check_replace(text: str, old: str, new: str, count: int | None) -> None:
    hits = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    check_size(len(text) + hits * max(len(new) - len(old), 0), "replace")


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_format(str(value))
    return _ORIGINAL_FILTERS["format"](value, *args, **kwargs)  # type: ignore[no-any-return]


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
    check_size(linecount, "batch")
    return _ORIGINAL_FILTERS["batch"](value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Any:
    check_size(slices, "slice")
    return _ORIGINAL_FILTERS["slice"](value, slices, fill_with)


def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    # Summing lists or strings is quadratic and outside any loop check.
    if not _is_number(start):
        raise BudgetExceeded("sum() adds numbers only")
    return _ORIGINAL_FILTERS["sum"](environment, iterable, attribute, start)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    check_size(n * max, "lipsum")
    return str(generate_lorem_ipsum(n, html, min, max))


_ORIGINAL_FILTERS: dict[str, Callable[..., Any]] = {}


def _install(env: ImmutableSandboxedEnvironment) -> None:
    from jinja2.filters import FILTERS

    _ORIGINAL_FILTERS.update(FILTERS)
    replacements: dict[str, Callable[..., Any]] = {
        "center": _center,
        "indent": _indent,
        "join": pass_eval_context(_join),
        "replace": pass_eval_context(_replace_filter),
        "format": _format,
        "batch": _batch,
        "slice": _slice,
        "sum": pass_environment(_sum),
        _LOOP: _loop,
        _CONCAT: _concat,
    }
    env.filters.update(replacements)
    env.globals["lipsum"] = _lipsum


# ---------------------------------------------------------------- method calls


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Methods of strings that can make a huge value from small arguments."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(obj, "__name__", "")
    numbers = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
    if any(n > active_limits().value for n in numbers) and name != "count":
        raise BudgetExceeded(f"str.{name}() with {max(numbers)} (limit {active_limits().value})")
    if name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 and isinstance(args[2], int) else None
        _check_replace(owner, str(args[0]), str(args[1]), count)
    elif name == "join" and args and isinstance(args[0], list | tuple | str):
        items = args[0]
        check_size(len(owner) * len(items) + sum(_sized(i) for i in items), "str.join")
    elif name in ("format", "format_map"):
        _check_format(owner)
    elif name == "expandtabs":
        size = numbers[0] if numbers else 8
        check_size(len(owner) + owner.count("\t") * size, "str.expandtabs")


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """An immutable sandbox whose renders are bounded by the :class:`Budget` in force.

    Outside any budget (compiling, constant folding) the size checks still
    apply, with :data:`RENDER_LIMITS`; time and steps are not counted.
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _install(self)
        self._constant_sizes: dict[str | None, int] = {}
        inner = self.finalize
        if inner is not None and not getattr(inner, "counts_output", False):
            self.finalize = _counting_finalize(inner)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = CURRENT_BUDGET.get()
        if budget is not None:
            budget.step()
        _check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        # Jinja's documented hook between parsing and code generation: every
        # template, subject line and ``when`` expression passes here.
        _Budgeting().visit(source)
        self._constant_sizes[name] = _constant_text(source)
        return super()._generate(source, name, filename, defer_init)

    def get_template(self, name: Any, parent: str | None = None, globals: Any = None) -> Any:
        template = super().get_template(name, parent, globals)
        budget = CURRENT_BUDGET.get()
        if parent is not None and budget is not None:  # an include, import or extends
            budget.step(self._constant_sizes.get(getattr(template, "name", None), 0))
        return template


def _counting_finalize(inner: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``pass_context`` finalize so every ``{{ value }}`` counts as output.

    A finalize marked ``counts_output = True`` does it itself (one call less
    per value) and is not wrapped.
    """

    @pass_context
    def counted(context: Context, value: Any) -> Any:
        budget = CURRENT_BUDGET.get()
        if budget is not None:  # Budget.produce inlined: this runs for every {{ value }}
            budget.produced += len(value) if isinstance(value, _SIZED) else 1
            if budget.produced > budget.limits.output:
                budget.produce(0)
        return inner(context, value)

    return counted
