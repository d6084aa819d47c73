"""A fake SendGrid v3 Mail Send API: a real HTTP server on 127.0.0.1 for tests and benchmarks.

It speaks enough of ``POST /v3/mail/send`` for the real ``sendgrid`` library and
:class:`~nurture.transports.sendgrid.SendGridTransport` to run unchanged against it::

    with FakeSendGrid(api_key="SG.test") as fake:
        transport = SendGridTransport("SG.test", host=fake.url, timeout=0.5)
        fake.enqueue("429", reset_in=2.0)      # the next request is rate limited
        ...
        assert len(fake.delivered) == 1

Every request is answered ``202 Accepted`` with a unique ``X-Message-Id`` (as
SendGrid does, https://www.twilio.com/docs/sendgrid/glossary/x-message-id) unless
a queued behaviour says otherwise. Behaviours (``enqueue(kind, times=...)``):

=========  ==================================================================
accept     202 with ``X-Message-Id`` (the default)
400        400 with SendGrid's error JSON; ``invalid_email=True`` gives the
           "Does not contain a valid address." error for the recipient
401, 403   the API key is wrong / lacks the ``mail.send`` permission
413        payload too large
429        rate limited: ``X-RateLimit-Limit/Remaining/Reset`` (an epoch
           timestamp, https://www.twilio.com/docs/sendgrid/api-reference/
           how-to-use-the-sendgrid-v3-api/rate-limits) ``reset_in`` s from now
500, 503   server errors
hang       read the request, answer nothing for ``seconds`` (woken at once
           when the server stops), then close the connection
drop       read the request, then close the connection without answering
reset      read the request, then reset the connection (TCP RST)
lost-      accept the mail send (it counts as delivered, with a message id),
answer     then close the connection before answering: the provider has the
           email, the client cannot know it (a sender must not resend it)
=========  ==================================================================

``message="..."`` replaces the error message of a 400, 401, 403, 413, 429,
500 or 503 answer: a provider echoing part of the request (the key, an
address) in its error, as some proxies and providers do.

A valid mail send with ``mail_settings.sandbox_mode.enable`` true is answered
``200`` with no body, as the real API does in sandbox mode, and is not
delivered (``nurture doctor`` sends one to check the key).

Only 202s count as delivered (:attr:`FakeSendGrid.delivered`). The server also
checks what the real API would reject outright (missing personalizations,
from, subject or content; a recipient without ``@``; non-string custom_args;
more than 10 categories) and answers 400 with a realistic error body.

The server speaks HTTP/1.1 keep-alive, every connection on one event loop in a
background thread (:class:`~nurture.testing.fake_sendgrid_http.WireServer`).
For throughput benchmarks run it in another process (no shared GIL with the
client) with :meth:`FakeSendGrid.start_subprocess`
or ``python -m nurture.testing.fake_sendgrid --port 8025 --latency 0.1``;
``GET /_fake/stats`` and ``POST /_fake/enqueue`` control it over HTTP.

Whatever ``record`` says, the server counts the mail sends per
``nurture_send_id`` custom arg (:meth:`FakeSendGrid.send_ids`, over HTTP
``GET /_fake/send_ids``): how many requests carried each id and how many were
accepted. A crash test asks it which emails reached the provider, and how many
times, across restarts of the process that sends. :meth:`FakeSendGrid.send_history`
(``GET /_fake/send_history``) has each id's requests in order: when each came
(epoch seconds), what was answered, and for a 429 the ``X-RateLimit-Reset`` it
gave, so a test can check that a sender waited as long as it was told.

This module is the fake itself: its state (queued behaviours, what was
received, the connections), its lifecycle and the command line. How one HTTP
request is answered (the server, its handler, SendGrid's error bodies) is in
:mod:`nurture.testing.fake_sendgrid_http`; the handle on a fake running in a
child process is in :mod:`nurture.testing.fake_sendgrid_process`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from nurture.testing.fake_sendgrid_http import BEHAVIOURS, Behaviour, WireServer
from nurture.testing.fake_sendgrid_process import FakeSendGridProcess


@dataclass(frozen=True)
class RecordedRequest:
    """One ``POST /v3/mail/send`` as the server saw it.

    ``headers`` has lower-case names. ``body`` is the parsed JSON (``None`` if it
    was not JSON). ``status`` is ``None`` when nothing was answered (hang, drop).
    """

    path: str
    headers: Mapping[str, str]
    raw_body: bytes
    body: Any
    status: int | None
    message_id: str | None
    behaviour: str

    @property
    def accepted(self) -> bool:
        return self.status == 202


def _send_id_of(body: Any) -> str | None:
    """The ``nurture_send_id`` custom arg of a mail send body, if it has one."""
    custom_args = body.get("custom_args") if isinstance(body, dict) else None
    value = custom_args.get("nurture_send_id") if isinstance(custom_args, dict) else None
    return value if isinstance(value, str) else None


class FakeSendGrid:
    """A local fake of SendGrid's Mail Send endpoint; see the module docstring.

    ``api_key``: when set, requests without ``Authorization: Bearer <api_key>``
    get 401. ``latency``: seconds added to every mail send (0.1 imitates the real
    API). ``record``: keep every request (turn off for long benchmarks; the
    counts in :meth:`stats` are kept either way). ``ssl_context``: a server
    context to speak HTTPS, as the real API does.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.api_key = api_key
        self.latency = latency
        self.record = record
        self.ssl_context = ssl_context
        self._address = (host, port)
        self._lock = threading.Lock()
        self._queue: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._received = 0
        self._delivered = 0
        self._connection_count = 0
        # nurture_send_id -> [requests received, requests accepted (202)]
        self._per_send_id: dict[str, list[int]] = {}
        # nurture_send_id -> [(epoch seconds, status or None, behaviour, 429 reset or None)]
        self._history: dict[str, list[tuple[float, int | None, str, int | None]]] = {}
        self._server: WireServer | None = None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeSendGrid is already running")
        server = WireServer(self, self._address, self.ssl_context)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop listening, end hung requests, close every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give the client as its API host, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("FakeSendGrid is not running: use it as a context manager")
        host, port = self._server.server_address[:2]
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host!s}:{port}"

    # -- behaviour --------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        *,
        times: int = 1,
        reset_in: float = 1.0,
        seconds: float = 5.0,
        invalid_email: bool = False,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` mail sends with ``kind`` (see the module docstring).

        ``reset_in``: for 429, seconds until ``X-RateLimit-Reset``. ``seconds``: how
        long ``hang`` holds the request (keep it above the client's timeout).
        ``message``: the error message of an error answer instead of the usual one.
        """
        if kind not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {kind!r}; known: {', '.join(sorted(BEHAVIOURS))}")
        with self._lock:
            self._queue.append(Behaviour(kind, times, reset_in, seconds, invalid_email, message))

    def next_behaviour(self) -> Behaviour | None:
        """For the request handler: the scripted answer this request gets, if any."""
        with self._lock:
            if not self._queue:
                return None
            behaviour = self._queue[0]
            behaviour.remaining -= 1
            if behaviour.remaining <= 0:
                self._queue.popleft()
            return behaviour

    # -- what happened ----------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every mail send received, in order (a snapshot)."""
        with self._lock:
            return list(self._requests)

    @property
    def delivered(self) -> list[Any]:
        """The JSON bodies of the accepted (202) mail sends, in order."""
        with self._lock:
            return [r.body for r in self._requests if r.accepted]

    def stats(self) -> dict[str, int]:
        """Counts kept even when ``record=False``: mail sends received and delivered
        (202), and connections accepted (keep-alive clients open few)."""
        with self._lock:
            return {
                "received": self._received,
                "delivered": self._delivered,
                "connections": self._connection_count,
            }

    def send_ids(self) -> dict[str, dict[str, int]]:
        """Per ``nurture_send_id`` custom arg: ``{"received": n, "accepted": m}``,
        the mail sends that carried it and those answered 202 (kept even when
        ``record=False``). A mail send without the custom arg is not counted here."""
        with self._lock:
            return {
                send_id: {"received": received, "accepted": accepted}
                for send_id, (received, accepted) in self._per_send_id.items()
            }

    def send_history(self) -> dict[str, list[dict[str, Any]]]:
        """Per ``nurture_send_id``, its mail sends in order: ``{"at": epoch seconds,
        "status": int or None (nothing answered), "behaviour": str, "reset":
        the X-RateLimit-Reset epoch second of a 429, else None}``."""
        with self._lock:
            return {
                send_id: [
                    {"at": at, "status": status, "behaviour": kind, "reset": reset}
                    for at, status, kind, reset in entries
                ]
                for send_id, entries in self._history.items()
            }

    def clear(self) -> None:
        """Forget recorded requests, counts and queued behaviours."""
        with self._lock:
            self._requests.clear()
            self._per_send_id.clear()
            self._history.clear()
            self._queue.clear()
            self._received = self._delivered = self._connection_count = 0

    def record_request(
        self,
        path: str,
        headers: Any,
        raw: bytes,
        body: Any,
        status: int | None,
        message_id: str | None,
        kind: str,
        reset_at: int | None = None,
    ) -> None:
        """For the request handler: count (and, when recording, keep) one request."""
        with self._lock:
            self._received += 1
            self._delivered += status == 202
            send_id = _send_id_of(body)
            if send_id is not None:
                counts = self._per_send_id.setdefault(send_id, [0, 0])
                counts[0] += 1
                counts[1] += status == 202
                self._history.setdefault(send_id, []).append((time.time(), status, kind, reset_at))
            if self.record:
                self._requests.append(
                    RecordedRequest(
                        path=path,
                        headers={name.lower(): value for name, value in headers},
                        raw_body=raw,
                        body=body,
                        status=status,
                        message_id=message_id,
                        behaviour=kind,
                    )
                )

    def count_connection(self) -> None:
        """For the server: a connection was accepted."""
        with self._lock:
            self._connection_count += 1

    # -- another process --------------------------------------------------

    @staticmethod
    def start_subprocess(
        *, latency: float = 0.0, api_key: str | None = None, port: int = 0, record: bool = False
    ) -> FakeSendGridProcess:
        """Run the fake in a child Python process (its own GIL) and return a handle.

        Use it for throughput measurements: in one process the server's threads
        compete with the client's for the interpreter lock.
        """
        args = [sys.executable, "-m", "nurture.testing.fake_sendgrid", "--port", str(port)]
        args += ["--latency", str(latency)]
        if api_key is not None:
            args += ["--api-key", api_key]
        if record:
            args.append("--record")
        return FakeSendGridProcess(args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nurture.testing.fake_sendgrid",
        description="Run a fake SendGrid Mail Send API on 127.0.0.1 (prints its URL).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per mail send")
    parser.add_argument("--api-key", default=None, help="answer 401 to any other key")
    parser.add_argument("--record", action="store_true", help="keep request bodies in memory")
    options = parser.parse_args(argv)
    fake = FakeSendGrid(
        api_key=options.api_key,
        latency=options.latency,
        host=options.host,
        port=options.port,
        record=options.record,
    )
    with fake:
        print(fake.url, flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass


if __name__ == "__main__":
    main()
