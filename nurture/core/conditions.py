"""``when`` conditions: Jinja2 expressions compiled in a sandbox.

A marketer's condition is code we run, so it runs in Jinja's
``ImmutableSandboxedEnvironment`` (no attribute access to internals, no
mutation of the objects we pass in) with ``StrictUndefined`` (a misspelt name is
an error, not a silent false). The names available are ``subscriber``,
``opened(step_id)``, ``clicked(step_id)`` and ``converted``.

Each evaluation runs under :data:`~nurture.core.sandbox.CONDITION_LIMITS`
(:mod:`nurture.core.sandbox`): ``'x' * 10**10`` or ``10 ** 10 ** 10`` is refused
before anything is allocated and reported as a ConditionError, like any other
failing condition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes

from nurture.core.sandbox import CONDITION_LIMITS, BudgetedSandbox, BudgetExceeded, spending

_ENV = BudgetedSandbox(undefined=StrictUndefined)
ENGAGEMENT_FUNCTIONS = ("opened", "clicked")


class ConditionError(ValueError):
    """A condition does not compile, or failed while evaluating."""


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

    def evaluate(self, subscriber: dict[str, Any], engagement: Engagement) -> bool:
        """Evaluate to a bool; any failure raises ConditionError with the reason."""
        try:
            with spending(CONDITION_LIMITS):
                result = self._compiled(
                    subscriber=subscriber,
                    opened=lambda step_id: step_id in engagement.opened,
                    clicked=lambda step_id: step_id in engagement.clicked,
                    converted=engagement.converted,
                )
                return bool(result)
        except BudgetExceeded as exc:
            raise ConditionError(f"condition stopped: {exc}") from exc
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
