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

The server is ``http.server.ThreadingHTTPServer`` speaking HTTP/1.1 keep-alive,
one daemon thread per connection. For throughput benchmarks run it in another
process (no shared GIL with the client) with :meth:`FakeSendGrid.start_subprocess`
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
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import math
import os
import selectors
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

log = logging.getLogger("nurture.testing.fake_sendgrid")

MAIL_SEND_PATH = "/v3/mail/send"
BEHAVIOURS = frozenset(
    {
        "accept",
        "400",
        "401",
        "403",
        "413",
        "429",
        "500",
        "503",
        "hang",
        "drop",
        "reset",
        "lost-answer",
    }
)
_ERRORS_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"


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


@dataclass
class _Behaviour:
    kind: str
    remaining: int
    reset_in: float
    seconds: float
    invalid_email: bool
    message: str | None = None


def _errors(message: str, field: str | None = None, help_anchor: str | None = None) -> bytes:
    """SendGrid's error body shape: ``{"errors": [{"message", "field", "help"}]}``."""
    error: dict[str, Any] = {"message": message, "field": field}
    if help_anchor is not None:
        error["help"] = f"{_ERRORS_HELP}#{help_anchor}"
    return json.dumps({"errors": [error]}).encode()


def _message(behaviour: _Behaviour | None, default: str) -> str:
    """The scripted error message of ``behaviour``, else ``default``."""
    return behaviour.message if behaviour is not None and behaviour.message else default


def _new_message_id() -> str:
    # Real ids are 22 URL-safe base64 characters, e.g. "W8Vt2Nz9Rly6hJc0Hq2nGQ".
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _body_problem(body: Any) -> tuple[str, str | None, str | None] | None:
    """What the real API would reject outright, as (message, field, help anchor)."""
    if not isinstance(body, dict):
        return "Bad Request", None, None
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return "The personalizations field is required.", "personalizations", None
    for p_index, personalization in enumerate(personalizations):
        recipients = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(recipients, list) or not recipients:
            return (
                "The to parameter is required for all personalization objects.",
                f"personalizations.{p_index}.to",
                "message.personalizations.to",
            )
        for r_index, recipient in enumerate(recipients):
            address = recipient.get("email") if isinstance(recipient, dict) else None
            if not isinstance(address, str) or "@" not in address:
                return (
                    "Does not contain a valid address.",
                    f"personalizations.{p_index}.to.{r_index}.email",
                    "message.personalizations.to",
                )
    sender = body.get("from")
    if not isinstance(sender, dict) or "@" not in str(sender.get("email", "")):
        return (
            "The from object must be provided for every email send.",
            "from.email",
            "message.from",
        )
    if not body.get("subject"):
        return "The subject is required.", "subject", "message.subject"
    if not body.get("content"):
        message = "The content value must be a string at least one character in length."
        return message, "content", "message.content"
    custom_args = body.get("custom_args", {})
    for key, value in custom_args.items() if isinstance(custom_args, dict) else ():
        if not isinstance(value, str):
            given = type(value).__name__
            return f"Invalid type. Expected: string, given: {given}.", f"custom_args.{key}", None
    if len(body.get("categories", [])) > 10:
        return "Too many categories.", "categories", "message.categories"
    return None


def _sandboxed(body: Any) -> bool:
    """Whether ``mail_settings.sandbox_mode.enable`` is true in a mail send body."""
    settings = body.get("mail_settings") if isinstance(body, dict) else None
    sandbox = settings.get("sandbox_mode") if isinstance(settings, dict) else None
    return isinstance(sandbox, dict) and sandbox.get("enable") is True


def _send_id_of(body: Any) -> str | None:
    """The ``nurture_send_id`` custom arg of a mail send body, if it has one."""
    custom_args = body.get("custom_args") if isinstance(body, dict) else None
    value = custom_args.get("nurture_send_id") if isinstance(custom_args, dict) else None
    return value if isinstance(value, str) else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # hung or idle keep-alive handlers must not delay stop()
    request_queue_size = 1024  # the listen backlog: 128 clients connecting at once
    fake: FakeSendGrid

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is normal here (timeouts, drops).
        log.debug("fake SendGrid: error handling %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API
    server_version = "FakeSendGrid/1.0"
    # Buffer the status line, headers and body and send them with one write (the
    # handler flushes after each request) rather than one per header line.
    wbufsize = -1
    server: _Server
    _reset = False  # answer with a TCP reset when the handler finishes
    _answering: tuple[int, str | None] | None = None  # (status, message id) being written
    _reset_at: int | None = None  # the X-RateLimit-Reset of a 429 answer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(5)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        # Small answers on a kept-alive connection would otherwise wait for the
        # client's delayed ACK (Nagle's algorithm): tens of milliseconds each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            if self._reset:
                # SO_LINGER with a zero timeout makes close() send RST instead of FIN;
                # detach first, or socketserver would shut the socket down (FIN) itself.
                self.server.fake._track(self.connection, add=False)
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                os.close(self.connection.detach())
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake SendGrid: " + format, *args)

    def do_GET(self) -> None:
        fake = self.server.fake
        if self.path == "/_fake/stats":
            self._reply(200, json.dumps(fake.stats()).encode())
        elif self.path == "/_fake/send_ids":
            self._reply(200, json.dumps(fake.send_ids()).encode())
        elif self.path == "/_fake/send_history":
            self._reply(200, json.dumps(fake.send_history()).encode())
        else:
            self._reply(404, _errors("not found"))

    def do_POST(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/_fake/enqueue":
            options = json.loads(raw)
            fake.enqueue(**options)
            self._reply(204, b"")
            return
        if self.path != MAIL_SEND_PATH:
            self._reply(404, _errors("not found"))
            return
        if fake.latency:
            time.sleep(fake.latency)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        self._answering = None
        self._reset_at = None
        try:
            status, message_id, kind = self._answer(fake, body)
        except OSError:
            # The client went away while the answer was written (a sender killed
            # mid-request): the mail send was received all the same, and a real
            # provider would deliver it, so it is counted before giving up.
            if self._answering is not None:
                status, message_id = self._answering
                fake._record(self.path, self.headers.items(), raw, body, status, message_id, "gone")
            raise
        fake._record(
            self.path, self.headers.items(), raw, body, status, message_id, kind, self._reset_at
        )

    def _answer(self, fake: FakeSendGrid, body: Any) -> tuple[int | None, str | None, str]:
        """Answer one mail send; return (status or None, message id, behaviour)."""
        # The real API checks the key before anything else.
        if fake.api_key is not None and self.headers.get("Authorization") != (
            f"Bearer {fake.api_key}"
        ):
            self._reply(
                401, _errors("The provided authorization grant is invalid, expired, or revoked")
            )
            return 401, None, "auth"
        behaviour = fake._next_behaviour()
        kind = behaviour.kind if behaviour else "accept"
        if kind == "hang":
            fake._stopping.wait(behaviour.seconds if behaviour else 0.0)
            self.close_connection = True
            return None, None, kind
        if kind == "drop":
            self.close_connection = True
            return None, None, kind
        if kind == "reset":
            self._reset = True
            self.close_connection = True
            return None, None, kind
        if kind == "lost-answer":
            # Delivered as far as the provider knows; the answer never leaves.
            self.close_connection = True
            return 202, _new_message_id(), kind
        if kind == "429":
            reset_in = behaviour.reset_in if behaviour else 1.0
            # An integer epoch second, rounded up so waiting that long suffices.
            self._reset_at = math.ceil(time.time() + reset_in)
            headers = {
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(self._reset_at),
            }
            self._reply(429, _errors(_message(behaviour, "too many requests")), headers)
            return 429, None, kind
        if kind in ("401", "403", "413", "500", "503"):
            messages = {
                "401": "The provided authorization grant is invalid, expired, or revoked",
                "403": "access forbidden",
                "413": "The JSON payload you have included in your request is too large.",
                "500": "internal server error",
                "503": "service unavailable",
            }
            self._reply(int(kind), _errors(_message(behaviour, messages[kind])))
            return int(kind), None, kind
        if kind == "400":
            if behaviour and behaviour.invalid_email:
                payload = _errors(
                    "Does not contain a valid address.",
                    "personalizations.0.to.0.email",
                    "message.personalizations.to",
                )
            else:
                payload = _errors(_message(behaviour, "Bad Request"))
            self._reply(400, payload)
            return 400, None, kind
        problem = _body_problem(body)
        if problem is not None:
            self._reply(400, _errors(*problem))
            return 400, None, "invalid"
        if _sandboxed(body):
            # Sandbox mode: validated, answered 200 with no body, never delivered.
            self._reply(200, b"")
            return 200, None, "sandbox"
        message_id = _new_message_id()
        self._reply(202, b"", {"X-Message-Id": message_id})
        return 202, message_id, kind

    def _reply(self, status: int, payload: bytes, headers: Mapping[str, str] = {}) -> None:
        self._answering = (status, headers.get("X-Message-Id"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


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
        self._queue: deque[_Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._received = 0
        self._delivered = 0
        self._connection_count = 0
        # nurture_send_id -> [requests received, requests accepted (202)]
        self._per_send_id: dict[str, list[int]] = {}
        # nurture_send_id -> [(epoch seconds, status or None, behaviour, 429 reset or None)]
        self._history: dict[str, list[tuple[float, int | None, str, int | None]]] = {}
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeSendGrid is already running")
        self._stopping.clear()
        server = _Server(self._address, _Handler)
        server.fake = self
        if self.ssl_context is not None:
            # The handshake happens in the connection's own thread (setup), so
            # a client that never completes it cannot stall the accept loop.
            server.socket = self.ssl_context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        # A short poll interval: stop() returns within ~50 ms.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-sendgrid",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes hung requests
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # idle keep-alive handlers wait on a read
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

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
            self._queue.append(_Behaviour(kind, times, reset_in, seconds, invalid_email, message))

    def _next_behaviour(self) -> _Behaviour | None:
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

    def _record(
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

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
                self._connection_count += 1
            else:
                self._connections.discard(connection)

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


class FakeSendGridProcess:
    """A :class:`FakeSendGrid` in a child process, controlled over HTTP."""

    def __init__(self, args: list[str]) -> None:
        self._process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        # The CLI prints its URL once it listens; give it a while to import.
        # (selectors, not select.select: that fails for a descriptor above 1023.)
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=30)
        line = self._process.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"fake SendGrid did not start: {line!r}")
        self.url = line

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/_fake/stats", timeout=5) as response:
            result: dict[str, int] = json.load(response)
            return result

    def send_ids(self) -> dict[str, dict[str, int]]:
        """See :meth:`FakeSendGrid.send_ids`."""
        with urllib.request.urlopen(f"{self.url}/_fake/send_ids", timeout=30) as response:
            result: dict[str, dict[str, int]] = json.load(response)
            return result

    def send_history(self) -> dict[str, list[dict[str, Any]]]:
        """See :meth:`FakeSendGrid.send_history`."""
        with urllib.request.urlopen(f"{self.url}/_fake/send_history", timeout=30) as response:
            result: dict[str, list[dict[str, Any]]] = json.load(response)
            return result

    def enqueue(self, kind: str, **options: Any) -> None:
        data = json.dumps({"kind": kind, **options}).encode()
        request = urllib.request.Request(f"{self.url}/_fake/enqueue", data=data, method="POST")
        urllib.request.urlopen(request, timeout=5).close()

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


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
