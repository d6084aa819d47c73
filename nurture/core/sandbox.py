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

How the hooks get in: ``call``, ``call_binop``, ``wrap_str_format`` (the
function templates get for ``str.format``) and ``get_template`` are the
sandbox's interception points; loops and ``~`` are rewritten in the parsed
tree (``_generate``, Jinja's hook for that) so their operands pass through a
budget filter; the value checks (:func:`check_size` and the operators') are
here too.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import update_wrapper
from typing import Any

from jinja2 import nodes, pass_context, pass_environment, pass_eval_context
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

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


# Values whose len() is their printed size, roughly. Bytes too: ``'a'.encode()``
# makes them, and every str method that can blow a value up has a bytes twin.
SIZED = _SIZED = (str, bytes, bytearray, list, tuple, dict)
_TEXT = (str, bytes, bytearray)


def _sized(value: Any) -> int:
    """About how large ``value`` prints: its length for text; for a list, tuple
    or dict its items and what they hold (one 50,000-character string in a list
    times 1,000 is 1,000 items, and 50 million characters once printed).
    Counting stops past the active limit, so a check costs at most that many
    steps."""
    if isinstance(value, _TEXT):
        return len(value)
    if not isinstance(value, list | tuple | dict):
        return 0
    limit, total, stack = active_limits().value, 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, _TEXT):
            total += len(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            total += len(item)
            stack.extend(item)
    return total


printed_size = _sized


def _as_text(value: Any) -> str:
    """``value`` as str, bytes one character per byte (for counting and parsing only)."""
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)


def _check_bits(bits: int) -> None:
    limit = active_limits().int_bits
    if bits > limit:
        raise BudgetExceeded(f"a number of about {bits} bits (limit {limit})")


def _check_width(number: str | int) -> int:
    """A format width or precision (digits, or an int given for ``*``), refused past the limit."""
    limit = active_limits().value
    if isinstance(number, str):  # no int() of a long digit string: it is slow, or refused
        width = int(number) if len(number) <= 9 else limit + 1
        shown = number if len(number) <= 20 else f"{number[:20]}..."
    else:
        width = abs(number)  # a negative '*' width pads on the left
        shown = str(width) if width.bit_length() <= 64 else f"about 2**{width.bit_length()}"
    if width > limit:
        raise BudgetExceeded(f"a format width of {shown} (limit {limit})")
    return width


# What follows '%' (and a '(key)') in printf formatting, as Python reads it:
# flags, width and precision (ASCII digits or '*'), a length modifier it
# ignores, the conversion type.
_PRINTF_REST = re.compile(r"[-+ #0]*(\*|[0-9]*)(?:\.(\*|[0-9]*))?[hlL]?(.?)", re.DOTALL)


def _printf_conversions(template: str) -> Iterator[tuple[str | None, str, str | None]]:
    """(key, width, precision) of each conversion of ``template % values``, '%%' left out."""
    at = template.find("%")
    while at >= 0:
        at += 1
        if template.startswith("%", at):
            at = template.find("%", at + 1)
            continue
        key = None
        if template.startswith("(", at):  # '%(key)': Python lets the key's parentheses nest
            depth, end = 1, at + 1
            while depth and end < len(template):
                depth += {"(": 1, ")": -1}.get(template[end], 0)
                end += 1
            key, at = template[at + 1 : end - 1], end
        rest = _PRINTF_REST.match(template, at)
        assert rest is not None  # every part is optional
        yield key, rest[1], rest[2]
        at = template.find("%", rest.end())


def _printed_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3 + 2  # digits in any base printf has, and a sign
    return _sized(value)


def _check_printf(template: str | bytes | bytearray, values: Any, what: str) -> None:
    """Refuse ``template % values`` before it is made: every width and precision
    (``*`` ones are the next arguments, as Python takes them), then the
    result's size, each conversion counted, so ``%(a)s`` repeated counts ``a``
    each time."""
    text = _as_text(template)
    arguments = iter(values if isinstance(values, tuple) else (values,))
    mapping = values if isinstance(values, Mapping) else None
    size = len(text)
    for key, width, precision in _printf_conversions(text):
        widths = [0]
        for number in (width, precision):
            if number == "*":
                star = next(arguments, None)
                widths.append(_check_width(star) if isinstance(star, int) else 0)
            elif number:
                widths.append(_check_width(number))
        if key is None:
            value = next(arguments, None)
        elif mapping is not None:
            value = mapping.get(key if isinstance(template, str) else key.encode("latin-1"))
        else:
            value = None
        size += max(*widths, _printed_size(value))
    check_size(size, what)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | bytes | bytearray | list | tuple) and isinstance(times, int):
                check_size(_sized(seq) * max(times, 0), "'*'")
        if isinstance(left, int) and isinstance(right, int):
            _check_bits(left.bit_length() + right.bit_length())
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            _check_bits(max(left.bit_length() - 1, 0) * right if abs(left) > 1 else 1)
    elif operator == "+":
        check_size(_sized(left) + _sized(right), "'+'")
    elif operator == "%" and isinstance(left, _TEXT):
        _check_printf(left, right, "'%'")


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
    # A list is counted before str() prints it: that is where it would blow up.
    check_size(sum(_sized(p) for p in pieces if isinstance(p, list | tuple | dict)), "'~'")
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
    _check_printf(str(value), kwargs or args, "format")  # what Jinja's filter does: value % ...
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
    """Methods of strings (and bytes) that can make a huge value from small arguments.

    ``str.format`` and ``format_map`` never get here: Jinja hands templates a
    wrapper instead (see :meth:`BudgetedSandbox.wrap_str_format`).
    """
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, _TEXT):
        return
    name = getattr(obj, "__name__", "")
    numbers = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
    if any(n > active_limits().value for n in numbers) and name != "count":
        raise BudgetExceeded(f"str.{name}() with {max(numbers)} (limit {active_limits().value})")
    if name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 and isinstance(args[2], int) else None
        _check_replace(_as_text(owner), _as_text(args[0]), _as_text(args[1]), count)
    elif name == "join" and args and isinstance(args[0], list | tuple | str):
        items = args[0]
        check_size(len(owner) * len(items) + sum(_sized(i) for i in items), "str.join")
    elif name == "expandtabs":
        size = numbers[0] if numbers else 8
        check_size(len(owner) + _as_text(owner).count("\t") * size, "str.expandtabs")


class _BudgetedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox: each field's spec is checked once its nested
    fields (``{0:>{1}}``) are filled in, before the field is formatted, and the
    fields made so far count towards the value limit (``'{0}' * n`` repeats one
    argument n times)."""

    _made = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self._made = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in re.findall(r"\d+", format_spec):  # any Unicode digits make a width
            _check_width(number)
        field = super().format_field(value, format_spec)
        self._made += _sized(field)
        check_size(self._made, "str.format")
        return field


class _BudgetedEscapeFormatter(_BudgetedFormatter, SandboxedEscapeFormatter):
    """The same for ``Markup.format``, which escapes each field."""


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

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """What templates get for a string's ``format``/``format_map``: the
        same sandboxing as Jinja's hook, with :class:`_BudgetedFormatter`, which
        checks each field's spec once nested fields are filled in.

        Jinja hands templates a wrapper here instead of the method, so
        :meth:`call` never sees the string, and it makes its formatter inside
        the hook with no way to swap it: so the hook is overridden whole.
        """
        if not isinstance(value, types.MethodType | types.BuiltinMethodType):
            return None
        text = getattr(value, "__self__", None)
        if value.__name__ not in ("format", "format_map") or not isinstance(text, str):
            return None
        formatter: _BudgetedFormatter
        if isinstance(text, Markup):
            formatter = _BudgetedEscapeFormatter(self, escape=text.escape)
        else:
            formatter = _BudgetedFormatter(self)
        kind = type(text)

        def format_map(mapping: Mapping[str, Any]) -> str:
            return kind(formatter.vformat(text, (), mapping))

        def format(*args: Any, **kwargs: Any) -> str:
            return kind(formatter.vformat(text, args, kwargs))

        wrapper = format_map if value.__name__ == "format_map" else format
        return update_wrapper(wrapper, value)

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
