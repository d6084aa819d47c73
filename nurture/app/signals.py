"""SIGTERM and Ctrl-C: the first asks to stop, a second one exits at once.

The first signal lets the work in flight end cleanly (the emails with the
provider are confirmed, the others recorded as not attempted). That can take
up to the provider's timeout when it hangs, so a second signal leaves at
once, as SIGKILL would: an email that was with the provider becomes
``unknown`` when its lease runs out, never sent twice.

Python runs a signal handler on the main thread between two bytecodes, maybe
while that thread holds a lock: a log handler's in the middle of a record, a
``threading.Event``'s inside its ``wait`` (a plain lock, not reentrant).
Stopping from inside the handler once deadlocked ``nurture worker``: it joined
the dispatching thread, which waited for the log lock the interrupted main
thread held. So the handlers here take no lock of ours: they append to a list
and call ``on_first``, which must not either (setting an ``Event`` that no
thread of ours waits on is fine; logging is not). The stopping itself is done
by the main thread, after :meth:`StopSignals.wait` returns.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT)


def exit_now(signum: int, _frame: FrameType | None) -> None:
    """The second signal: leave at once, saying why (``os.write``: a handler
    must not take the logging locks)."""
    os.write(
        2,
        f"signal {signum} again: exiting now; the emails in flight become "
        "unknown when their lease runs out (`nurture sends list --status unknown`)\n".encode(),
    )
    os._exit(128 + signum)


class StopSignals:
    """SIGTERM and SIGINT handlers for the ``with`` block (the previous ones
    come back after it); see the module docstring."""

    def __init__(self, on_first: Callable[[int], None] | None = None) -> None:
        self.on_first = on_first
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in HANDLED}
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def first(self) -> int | None:
        """The first signal received, if any."""
        return self.received[0] if self.received else None

    def wait(self, poll: float = 0.2) -> int:
        """Block the main thread until a signal comes; return it. Polls a list
        rather than waiting on an ``Event``, whose lock the handler would need."""
        while not self.received:
            time.sleep(poll)
        return self.received[0]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            exit_now(signum, frame)
        self.received.append(signum)
        if self.on_first is not None:
            self.on_first(signum)
