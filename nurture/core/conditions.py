"""``when`` conditions: Jinja2 expressions compiled in a sandbox.

A marketer's condition is code we run, so it runs in Jinja's
``ImmutableSandboxedEnvironment`` (no attribute access to internals, no
mutation of the objects we pass in) with ``StrictUndefined`` (a misspelt name is
an error, not a silent false). The names available are ``subscriber``,
``opened(step_id)``, ``clicked(step_id)`` and ``converted``.

Each evaluation runs under :data:`~nurture.core.budget.CONDITION_LIMITS`
(:mod:`nurture.core.sandbox`): ``'x' * 10**10`` or ``10 ** 10 ** 10`` is refused
before anything is allocated and reported as a ConditionError, like any other
failing condition.

:func:`name_problems` checks a condition's names without running it: an
unknown function (``cliked``), variable (``subscribr``) or subscriber field
(``subscriber.atributes``) is reported with its offset in the source and the
nearest known name, so ``validate`` can point at it even when no sample
subscriber reaches that part of the expression.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes

from nurture.core.budget import CONDITION_LIMITS, BudgetExceeded, spending
from nurture.core.sandbox import BudgetedSandbox
from nurture.core.subscriber import FIELDS
from nurture.core.undefined import explain_undefined

_ENV = BudgetedSandbox(undefined=StrictUndefined)
ENGAGEMENT_FUNCTIONS = ("opened", "clicked")
CONDITION_NAMES = ("subscriber", "trigger", "converted", *ENGAGEMENT_FUNCTIONS)
"""The names a condition can use (Jinja's own globals, ``range`` and the like, work too)."""
# `subscriber` is a dict: its read-only methods work as in Python.
_SUBSCRIBER_METHODS = frozenset({"get", "keys", "values", "items"})


class ConditionError(ValueError):
    """A condition does not compile, or failed while evaluating; ``offset`` is
    where in its source the problem is written, when that is known."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Engagement:
    """What a subscriber has done so far, as conditions see it."""

    opened: frozenset[str] = field(default_factory=frozenset)
    clicked: frozenset[str] = field(default_factory=frozenset)
    converted: bool = False


@dataclass(frozen=True)
class Condition:
    """A compiled ``when`` expression."""

    source: str
    referenced_steps: tuple[str, ...]
    _compiled: Callable[..., Any]

    def evaluate(
        self,
        subscriber: dict[str, Any],
        engagement: Engagement,
        trigger: dict[str, Any] | None = None,
    ) -> bool:
        """Evaluate to a bool; any failure raises ConditionError with the reason.

        ``trigger`` is ``{"properties": {...}}`` of the app event that started
        the enrollment (empty properties when none did).
        """
        scope = {
            "subscriber": subscriber,
            "trigger": trigger if trigger is not None else {"properties": {}},
            "opened": lambda step_id: step_id in engagement.opened,
            "clicked": lambda step_id: step_id in engagement.clicked,
            "converted": engagement.converted,
        }
        try:
            with spending(CONDITION_LIMITS):
                return bool(self._compiled(**scope))
        except BudgetExceeded as exc:
            raise ConditionError(f"condition stopped: {exc}") from exc
        except UndefinedError as exc:
            explained = explain_undefined(exc.message or "", self.source, scope)
            if explained is None:
                raise ConditionError(f"UndefinedError: {exc}") from exc
            raise ConditionError(explained.message, offset=explained.offset) from exc
        except Exception as exc:  # anything the expression raises is the author's error
            raise ConditionError(f"{type(exc).__name__}: {exc}") from exc


def _referenced_steps(source: str) -> tuple[str, ...]:
    tree = _ENV.parse("{{ " + source + " }}")
    found: list[str] = []
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name in ENGAGEMENT_FUNCTIONS:
            if len(call.args) != 1 or not isinstance(call.args[0], nodes.Const):
                raise ConditionError(f"{call.node.name}() takes one step id in quotes")
            found.append(str(call.args[0].value))
    return tuple(found)


@lru_cache(maxsize=1024)
def compile_condition(source: str) -> Condition:
    """Compile ``source``; a syntax error raises ConditionError."""
    try:
        compiled = _ENV.compile_expression(source, undefined_to_none=False)
        referenced = _referenced_steps(source)
    except TemplateSyntaxError as exc:
        raise ConditionError(f"invalid condition {source!r}: {exc.message}") from exc
    return Condition(source, referenced, compiled)


def check_references(condition: Condition, earlier_steps: Iterable[str]) -> list[str]:
    """Problems with step ids the condition names: each must be an earlier step."""
    earlier = set(earlier_steps)
    return [
        f"condition refers to {step_id!r}, which is not an earlier step of this sequence"
        for step_id in condition.referenced_steps
        if step_id not in earlier
    ]


@dataclass(frozen=True)
class NameProblem:
    """An unknown name in a condition: ``offset`` is where it starts in the source."""

    offset: int
    message: str


def _nearest(word: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" — did you mean {match[0]!r}?" if match else ""


# Identifiers outside string literals, and whether a dot comes before them.
_TOKEN = re.compile(
    r"""(?P<string>'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")"""
    r"|(?P<dot>\.\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
)


def _offsets(source: str) -> tuple[dict[str, int], dict[str, int]]:
    """The first offset of each bare identifier and of each one after a dot."""
    bare: dict[str, int] = {}
    dotted: dict[str, int] = {}
    for match in _TOKEN.finditer(source):
        name = match.group("name")
        if name is None:
            continue
        found = dotted if match.group("dot") else bare
        found.setdefault(name, match.start("name"))
    return bare, dotted


def _string_offset(source: str, value: str) -> int:
    match = re.search(r"""\[\s*['"]""" + re.escape(value) + r"""['"]""", source)
    return match.start() + match.group().index(value) if match else 0


def name_problems(source: str) -> list[NameProblem]:
    """Unknown names in a condition that compiles, nearest known name suggested.

    Checked: every variable and function (``subscriber``, ``converted``,
    ``opened()``, ``clicked()`` and Jinja's globals), and the fields of
    ``subscriber`` (``subscriber.x``, ``subscriber['x']``). What a field holds
    (``subscriber.attributes.plan``) depends on the subscriber: that is for the
    sample subscribers, and for send time.
    """
    try:
        tree = _ENV.parse("{{ " + source + " }}")
    except TemplateSyntaxError:
        return []  # compile_condition reports it
    bare, dotted = _offsets(source)
    called = {id(call.node) for call in tree.find_all(nodes.Call)}
    problems: dict[str, NameProblem] = {}

    def add(key: str, offset: int, message: str) -> None:
        problems.setdefault(key, NameProblem(offset, message))

    for node in tree.find_all(nodes.Name):
        name, offset = node.name, bare.get(node.name, 0)
        if name in ENGAGEMENT_FUNCTIONS and id(node) not in called:
            add(name, offset, f"{name} is a function: write {name}('step-id')")
        elif name == "converted" and id(node) in called:
            add(name, offset, "converted is true or false, not a function: write converted")
        elif name not in CONDITION_NAMES and name not in _ENV.globals:
            if id(node) in called:
                hint = _nearest(name, ENGAGEMENT_FUNCTIONS)
                add(name, offset, f"unknown function {name!r}{hint} (a condition can call "
                    "opened('step-id') and clicked('step-id'))")  # fmt: skip
            else:
                hint = _nearest(name, CONDITION_NAMES)
                add(name, offset, f"unknown name {name!r}{hint} (a condition can use "
                    "subscriber, converted, opened('step-id') and clicked('step-id'))")  # fmt: skip
    allowed: frozenset[str]
    for access in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = access.node if isinstance(access, nodes.Getattr | nodes.Getitem) else None
        if not (isinstance(target, nodes.Name) and target.name == "subscriber"):
            continue
        if isinstance(access, nodes.Getattr):
            field, offset, allowed = access.attr, dotted.get(access.attr, 0), _SUBSCRIBER_METHODS
        elif (
            isinstance(access, nodes.Getitem)
            and isinstance(access.arg, nodes.Const)
            and isinstance(access.arg.value, str)
        ):
            field, allowed = access.arg.value, frozenset()
            offset = _string_offset(source, field)
        else:
            continue
        if field not in FIELDS and field not in allowed:
            fields = ", ".join(FIELDS)
            add(
                f"subscriber.{field}",
                offset,
                f"subscriber has no field {field!r}{_nearest(field, FIELDS)} (fields: {fields})",
            )
    return sorted(problems.values(), key=lambda problem: problem.offset)
