"""What one render of marketer code may spend: time, steps and output.

A :class:`Budget` is made per render (one email, all its parts; or one ``when``
condition) from its :class:`Limits`, and put in force for the block by
:class:`spending`; the sandbox's hooks (:mod:`nurture.core.sandbox`) charge it
at every loop iteration, call and include, and refuse oversized values before
they are made. The budget in force is a :class:`~contextvars.ContextVar`, so
concurrent renders in different threads each see their own.

Time is a wall-clock deadline checked at each step, with no signal, so it works
in any thread. Past the deadline a render is stopped only if it really spent
the time itself: pauses of the garbage collector's full collections do not
count, and a render whose thread had less than :data:`CPU_SHARE` of the
deadline in CPU time was waiting for the processor, not looping, so it goes
on. :data:`CEILING` times the deadline stops anything.
"""

from __future__ import annotations

import gc
import threading
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass


class BudgetExceeded(Exception):
    """A template or condition went past its budget; the message says which one."""


@dataclass(frozen=True)
class Limits:
    """The bounds of one render: one email, all its parts (body, layout, text
    part, subject). The first email of a new structure renders the body two or
    three times (see :mod:`nurture.core.rendering.placeholders`), and
    ``validate`` always does: a template that validates stays within budget
    when sent."""

    seconds: float = 3.0
    steps: int = 250_000
    output: int = 1_000_000  # characters produced, estimated
    value: int = 500_000  # characters (or items) of one value made by an operator
    int_bits: int = 100_000  # an integer made by an operator (10**30000 is plenty)


RENDER_LIMITS = Limits()
CONDITION_LIMITS = Limits(seconds=0.5, steps=10_000, output=100_000, value=100_000)


# Seconds the garbage collector's full collections have stopped every thread,
# since this module was imported. A full collection of a large process can
# take seconds; a render it interrupted did not spend them.
_collector = {"paused": 0.0, "since": 0.0}


def _time_full_collections(phase: str, info: dict[str, int]) -> None:
    if info["generation"] != 2:
        return
    if phase == "start":
        _collector["since"] = time.monotonic()
    else:
        _collector["paused"] += time.monotonic() - _collector["since"]


gc.callbacks.append(_time_full_collections)

CPU_SHARE = 0.25  # of the deadline, in the render's own CPU time, before the clock stops it
CEILING = 10  # times the deadline: stopped whatever the CPU time (a thread starved that long)


def collector_pauses() -> float:
    """Seconds full garbage collections have paused the process so far."""
    return _collector["paused"]


class Budget:
    """What one render may still spend; :meth:`step` and :meth:`produce` raise when it is gone."""

    __slots__ = ("cpu", "deadline", "limits", "paused", "produced", "started", "steps", "thread")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.started = time.monotonic()
        self.deadline = self.started + limits.seconds
        self.paused = _collector["paused"]
        self.thread = threading.get_ident()
        self.cpu = time.thread_time()
        self.steps = 0
        self.produced = 0

    def step(self, weight: int = 0) -> None:
        self.steps += 1
        if self.steps > self.limits.steps:
            raise BudgetExceeded(f"more than {self.limits.steps} loop iterations and calls")
        if weight:
            self.produce(weight)
        if time.monotonic() > self.deadline:
            self.overtime()

    def overtime(self) -> None:
        """The deadline passed: stop the render if it spent the time, else move the deadline."""
        limit = self.limits.seconds
        paused = _collector["paused"] - self.paused
        elapsed = time.monotonic() - self.started - paused
        if elapsed < limit:  # the collector took the rest
            self.deadline = self.started + paused + limit
            return
        if elapsed < limit * CEILING and threading.get_ident() == self.thread:
            spent = time.thread_time() - self.cpu - paused
            wanted = limit * CPU_SHARE
            if spent < wanted:  # waiting for the processor; look again when it could have spent it
                self.deadline = time.monotonic() + (wanted - spent)
                return
        raise BudgetExceeded(f"took longer than {limit:g} s")

    def produce(self, characters: int) -> None:
        self.produced += characters
        if self.produced > self.limits.output:
            raise BudgetExceeded(f"output larger than {self.limits.output} characters")


_CURRENT: ContextVar[Budget | None] = ContextVar("nurture_budget", default=None)
CURRENT_BUDGET = _CURRENT
"""The budget in force, if any (the sandbox's hooks and a finalize that counts
its own output read it)."""


def current_budget() -> Budget | None:
    return _CURRENT.get()


class spending:
    """Run the block under a fresh budget; an enclosing one stays in force if already set.

    A class rather than ``@contextmanager``: it is entered for every email.
    """

    __slots__ = ("_limits", "_token")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._token: Token[Budget | None] | None = None

    def __enter__(self) -> Budget:
        active = _CURRENT.get()
        if active is not None:
            return active
        budget = Budget(self._limits)
        self._token = _CURRENT.set(budget)
        return budget

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None


def active_limits() -> Limits:
    """The limits of the budget in force (a render's when there is none)."""
    budget = _CURRENT.get()
    return budget.limits if budget is not None else RENDER_LIMITS
