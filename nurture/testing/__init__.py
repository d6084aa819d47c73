"""Test doubles shipped with nurture: inject them instead of patching.

* :class:`MemoryTransport` – a transport that keeps what it sends in a list and
  fails when told to (also registered as the ``memory`` transport).
* :class:`~nurture.testing.fake_sendgrid.FakeSendGrid` – a local HTTP server that
  behaves like SendGrid's Mail Send API, for the real ``SendGridTransport``.

::

    transport = MemoryTransport()
    transport.fail_next(TransientSendError("429", status=429, retry_after=2.0))
    transport.accept_then_raise(AmbiguousSendError("timed out after the request"))
    dispatcher = Dispatcher(..., transport=transport)
    ...
    assert [e.step_id for e in transport.sent] == ["welcome"]
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Self

from nurture.errors import SendError
from nurture.transports.base import BaseTransport, OutgoingEmail, SendResult, message_id_of

if TYPE_CHECKING:
    from nurture.app.settings import Settings
    from nurture.testing.fake_sendgrid import FakeSendGrid, RecordedRequest

__all__ = ["FakeSendGrid", "MemoryTransport", "RecordedRequest"]


def __getattr__(name: str) -> object:
    # Imported on first use, so that ``python -m nurture.testing.fake_sendgrid``
    # does not find the module already imported (runpy warns about that).
    if name in ("FakeSendGrid", "RecordedRequest"):
        from nurture.testing import fake_sendgrid

        return getattr(fake_sendgrid, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Hook = Callable[[OutgoingEmail], None]
"""Called with each email before it is accepted; raise to make that send fail."""


class MemoryTransport(BaseTransport[OutgoingEmail, int]):
    """Keeps every accepted email in :attr:`sent` (thread-safe); fails on request.

    Failures are queued and used one per send, in order:

    * :meth:`fail_next` – the send raises and the email is *not* recorded
      (the provider refused it);
    * :meth:`accept_then_raise` – the email *is* recorded, then the send raises
      (the provider took it but the answer was lost: what a timeout after the
      request looks like).

    ``hook`` (optional) runs for every send before it is accepted; it may raise
    (e.g. fail every email to one address) or sleep (imitate latency).
    """

    name = "memory"
    display_name = "memory"
    delivers = False  # nothing leaves the machine

    def __init__(self, *, hook: Hook | None = None, record: bool = True) -> None:
        self.hook = hook
        # record=False only counts (`accepted`): a benchmark of the dispatcher
        # should not measure a transport that keeps every email in memory.
        self.record = record
        self.accepted = 0
        self.sent: list[OutgoingEmail] = []
        """Accepted emails, in the order they were accepted. Appended under a lock."""
        self._lock = threading.Lock()
        self._plan: deque[tuple[bool, SendError | Exception]] = deque()
        self._ids = itertools.count(1)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls()

    def fail_next(self, *errors: SendError | Exception) -> None:
        """The next ``len(errors)`` sends raise these, in order, without sending."""
        with self._lock:
            self._plan.extend((False, error) for error in errors)

    def accept_then_raise(self, *errors: SendError | Exception) -> None:
        """The next ``len(errors)`` sends record the email, then raise these."""
        with self._lock:
            self._plan.extend((True, error) for error in errors)

    def build_request(self, email: OutgoingEmail) -> OutgoingEmail:
        return email

    def call(self, request: OutgoingEmail) -> int:
        """Accept ``request`` (its number among the accepted) or fail as planned."""
        with self._lock:
            accept, error = self._plan.popleft() if self._plan else (True, None)
        if error is not None and not accept:
            raise error
        if self.hook is not None:
            self.hook(request)
        with self._lock:
            if self.record:
                self.sent.append(request)
            self.accepted += 1
            number = next(self._ids)
        if error is not None:
            raise error
        return number

    def translate_error(self, exc: Exception, request: OutgoingEmail) -> SendError | None:
        # There is no lower layer: whatever the plan or the hook raise is what the
        # test asked for (a non-SendError imitates a transport with a bug).
        return None

    def parse_result(
        self, email: OutgoingEmail, request: OutgoingEmail, response: int
    ) -> SendResult:
        message_id = message_id_of(email.message) or f"<memory-{response}@nurture.invalid>"
        return SendResult(provider=self.name, message_id=message_id, raw={"number": response})

    def sent_to(self, address: str) -> list[OutgoingEmail]:
        """The accepted emails for one recipient (case-insensitive)."""
        with self._lock:
            return [e for e in self.sent if e.to_email.lower() == address.lower()]

    def clear(self) -> None:
        """Forget sent emails and queued failures."""
        with self._lock:
            self.sent.clear()
            self._plan.clear()
