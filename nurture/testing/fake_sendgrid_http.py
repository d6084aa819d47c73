"""How the fake SendGrid answers one HTTP request: its server, request reader and scripted faults.

:class:`~nurture.testing.fake_sendgrid.FakeSendGrid` keeps the state (the queue
of behaviours, what was received, the connection count) and its lifecycle; this
module is the wire side of it: :class:`WireServer`, one event loop in a
background thread for every connection, which reads each ``POST /v3/mail/send``
(:func:`read_request`), takes the next queued :class:`Behaviour` (:func:`decide`),
checks the body as the real API would and writes the answer (202 with an
``X-Message-Id``, SendGrid's error JSON, a 429 with its rate-limit headers, or a
hang, drop or reset), plus the ``/_fake/...`` control endpoints. The behaviours
are listed in :mod:`nurture.testing.fake_sendgrid`.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import email.utils
import html
import json
import logging
import math
import os
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nurture.testing.fake_sendgrid import FakeSendGrid

# The fake logs under one name, whichever of its modules the line is in.
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
# Limits on a request's header section, as the standard library's parser has.
_MAX_HEADER_LINE = 65536
_MAX_HEADERS = 100
_ERRORS_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"


@dataclass
class Behaviour:
    """One queued answer (:meth:`FakeSendGrid.enqueue`): ``kind`` for ``remaining`` more sends."""

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


def _message(behaviour: Behaviour | None, default: str) -> str:
    """The scripted error message of ``behaviour``, else ``default``."""
    return behaviour.message if behaviour is not None and behaviour.message else default


def _new_message_id() -> str:
    # Real ids are 22 URL-safe base64 characters, e.g. "W8Vt2Nz9Rly6hJc0Hq2nGQ".
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


class Fields:
    """A request's header fields: looked up by name in any case (the first of a
    repeated one, as ``http.client.HTTPMessage.get``), listed as received.

    ``HTTPMessage`` sanitizes every value again at each lookup; the fake looks
    up three fields a request, on the machine whose workers it measures."""

    __slots__ = ("_first", "_items")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = items or []
        # Built from the last to the first, so the first of a name stays.
        self._first = {name.lower(): value for name, value in reversed(self._items)}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


_DATE: list[tuple[int, str]] = [(0, "")]
"""The ``Date`` of this second, formatted once: (epoch second, value)."""


def _date() -> str:
    now = int(time.time())
    second, value = _DATE[0]
    if second != now:
        value = email.utils.formatdate(now, usegmt=True)
        _DATE[0] = (now, value)
    return value


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


@dataclass
class Answer:
    """What one mail send gets: the answer to write (``status`` None: none), then
    what becomes of the connection, and what the fake records of it."""

    status: int | None
    kind: str
    payload: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    message_id: str | None = None
    reset_at: int | None = None  # the X-RateLimit-Reset of a 429
    then: str = "keep"  # keep | close | reset (TCP RST) | hang (then close)
    hang_for: float = 0.0


_ERROR_MESSAGES = {
    "401": "The provided authorization grant is invalid, expired, or revoked",
    "403": "access forbidden",
    "413": "The JSON payload you have included in your request is too large.",
    "500": "internal server error",
    "503": "service unavailable",
}


def decide(fake: FakeSendGrid, fields: Fields, body: Any) -> Answer:
    """How the fake answers one mail send: the key, then the next queued
    behaviour, then what the real API checks in the body."""
    # The real API checks the key before anything else.
    if fake.api_key is not None and fields.get("Authorization") != f"Bearer {fake.api_key}":
        return Answer(401, "auth", _errors(_ERROR_MESSAGES["401"]))
    behaviour = fake.next_behaviour()
    kind = behaviour.kind if behaviour else "accept"
    if kind == "hang":
        return Answer(None, kind, then="hang", hang_for=behaviour.seconds if behaviour else 0.0)
    if kind == "drop":
        return Answer(None, kind, then="close")
    if kind == "reset":
        return Answer(None, kind, then="reset")
    if kind == "lost-answer":
        # Delivered as far as the provider knows; the answer never leaves.
        return Answer(202, kind, message_id=_new_message_id(), then="close")
    if kind == "429":
        reset_in = behaviour.reset_in if behaviour else 1.0
        # An integer epoch second, rounded up so waiting that long suffices.
        reset_at = math.ceil(time.time() + reset_in)
        headers = {
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset_at),
        }
        payload = _errors(_message(behaviour, "too many requests"))
        return Answer(429, kind, payload, headers, reset_at=reset_at)
    if kind in _ERROR_MESSAGES:
        return Answer(int(kind), kind, _errors(_message(behaviour, _ERROR_MESSAGES[kind])))
    if kind == "400":
        if behaviour and behaviour.invalid_email:
            payload = _errors(
                "Does not contain a valid address.",
                "personalizations.0.to.0.email",
                "message.personalizations.to",
            )
        else:
            payload = _errors(_message(behaviour, "Bad Request"))
        return Answer(400, kind, payload)
    problem = _body_problem(body)
    if problem is not None:
        return Answer(400, "invalid", _errors(*problem))
    if _sandboxed(body):
        # Sandbox mode: validated, answered 200 with no body, never delivered.
        return Answer(200, "sandbox")
    message_id = _new_message_id()
    return Answer(202, kind, headers={"X-Message-Id": message_id}, message_id=message_id)


_SERVER = "FakeSendGrid/1.0 Python/" + sys.version.split()[0]
_REASONS = {status: reason for status, (reason, _) in BaseHTTPRequestHandler.responses.items()}


def _answer(status: int, headers: list[str], payload: bytes) -> bytes:
    """An HTTP/1.1 answer as ``http.server`` writes it: the status line, then
    ``Server`` and ``Date``, then ``headers`` (lines) and the payload."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}", f"Server: {_SERVER}"]
    lines += [f"Date: {_date()}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def answer_bytes(status: int, payload: bytes, headers: Mapping[str, str] = {}) -> bytes:
    """One answer of the fake's own (SendGrid's JSON, when there is a payload)."""
    lines = [f"{name}: {value}" for name, value in headers.items()]
    if payload:
        lines.append("Content-Type: application/json")
    lines.append(f"Content-Length: {len(payload)}")
    return _answer(status, lines, payload)


def _error_page(status: int, message: str) -> bytes:
    """``http.server``'s HTML error page for ``status`` (its body only)."""
    reason, explain = BaseHTTPRequestHandler.responses.get(status, ("", ""))
    page = BaseHTTPRequestHandler.error_message_format % {
        "code": status,
        "message": html.escape(message or reason, quote=False),
        "explain": html.escape(explain, quote=False),
    }
    data: bytes = page.encode("utf-8", "replace")
    return data


def error_answer(status: int, message: str) -> bytes:
    """An error ``http.server`` would send for a malformed request: its page,
    with ``Connection: close``."""
    page = _error_page(status, message)
    lines = ["Connection: close", "Content-Type: text/html;charset=utf-8"]
    return _answer(status, [*lines, f"Content-Length: {len(page)}"], page)


class _Refused(Exception):
    """A request the fake answers with an error and then closes on."""

    def __init__(self, data: bytes) -> None:
        super().__init__("refused")
        self.data = data


@dataclass
class Request:
    method: str
    path: str
    version: str
    fields: Fields
    close: bool  # the client asked to close after this one (or speaks HTTP/1.0)
    length: int  # of the body


_HEAD_LIMIT = _MAX_HEADER_LINE * (_MAX_HEADERS + 2)
"""Bytes a request line and header section may take before the fake gives up on them."""


def take_head(data: bytearray) -> list[str] | None:
    """The request head at the start of ``data``, as lines (line ends removed),
    taken out of it; None while its empty line has not come."""
    # The empty line ends the head: CRLF CRLF, or a bare LF on either side.
    end = data.find(b"\n\r\n")
    bare = data.find(b"\n\n")
    if bare >= 0 and (end < 0 or bare < end):
        head = bytes(data[:bare])
        del data[: bare + 2]
    elif end >= 0:
        head = bytes(data[:end])
        del data[: end + 3]
    elif len(data) > _HEAD_LIMIT:
        raise _Refused(error_answer(431, "Request header fields too large"))
    else:
        return None
    return [line.rstrip("\r") for line in head.decode("iso-8859-1").split("\n")]


def parse_head(lines: list[str]) -> Request | None:
    """The request a head asks for; None for a blank line (``http.server`` closes).

    A plain ``METHOD PATH HTTP/1.x`` request line is what a client sends; any
    other is answered as ``http.server`` answers it (its error page, with no
    status line when the version was not understood). A malformed header line
    is answered 400, more than 100 of them 431.
    """
    if not lines[0].strip():
        return None
    words = lines[0].split()
    if len(words) != 3 or words[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Refused(_unusual_request_line(words))
    if len(lines) > _MAX_HEADERS + 1:
        raise _Refused(error_answer(431, "Too many headers"))
    method, path, version = words
    parts = [line.partition(":") for line in lines[1:]]
    for line, (name, colon, _) in zip(lines[1:], parts, strict=True):
        if not colon or len(line) + 2 > _MAX_HEADER_LINE or name != name.strip():
            raise _Refused(error_answer(400, "Bad header line"))
    fields = Fields([(name, value.strip()) for name, _, value in parts])
    path = "/" + path.lstrip("/") if path.startswith("//") else path
    connection = (fields.get("Connection") or "").lower()
    close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
    length = (fields.get("Content-Length") or "0").strip()
    if not length.isdigit():
        raise _Refused(error_answer(400, "Bad Content-Length"))
    return Request(method, path, version, fields, close, int(length))


def _unusual_request_line(words: list[str]) -> bytes:
    """What ``http.server`` answers to a request line it does not take: a
    version it does not speak (505) or cannot read (400), or a line that is no
    request (400); with no status line, as it does when the version was not
    understood."""
    if len(words) >= 3 and words[-1].startswith("HTTP/"):
        version = words[-1]
        try:
            major = int(version[5:].split(".", 1)[0]) if "." in version else -1
        except ValueError:
            major = -1
        if len(words) == 3 and major >= 2:
            return _error_page(505, f"Invalid HTTP version ({version[5:]})")
        if len(words) == 3 and major < 0:
            return _error_page(400, f"Bad request version ({version!r})")
    return _error_page(400, f"Bad request syntax ({' '.join(words)!r})")


class WireServer:
    """The fake's HTTP/1.1 server: every connection on one event loop, in one
    background thread, each a :class:`Connection`.

    A real provider is on other machines; the fake shares this one with the
    workers it measures. A thread per connection, each sleeping out its
    latency and waking to answer, cost the fake 270–360 µs of CPU a mail send
    at 1,000 a second on two cores, mostly in waking threads.
    """

    def __init__(
        self, fake: FakeSendGrid, address: tuple[str, int], ssl_context: ssl.SSLContext | None
    ) -> None:
        self.fake = fake
        self._address = address
        self._ssl = ssl_context
        self.loop = asyncio.new_event_loop()
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="fake-sendgrid", daemon=True)
        self.server_address: tuple[str, int] = address

    def start(self) -> None:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(timeout=30)
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
            raise

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    async def _listen(self) -> None:
        host, port = self._address
        self._server = await self.loop.create_server(
            lambda: Connection(self),
            host,
            port,
            ssl=self._ssl,
            ssl_handshake_timeout=5 if self._ssl is not None else None,
            backlog=1024,  # 128 clients connecting at once
        )
        self.server_address = self._server.sockets[0].getsockname()[:2]

    def stop(self) -> None:
        """Stop listening, end hung requests, close every connection."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.stop()
        await asyncio.sleep(0)  # let the transports close


class Connection(asyncio.Protocol):
    """One client connection: its requests answered one at a time, in order.

    Bytes that come while a request is answered (its latency, a hang) wait
    in the buffer for the answer to leave.
    """

    def __init__(self, server: WireServer) -> None:
        self.server = server
        self.fake = server.fake
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None  # its head read, its body awaited
        self.busy = False  # a mail send is being answered
        self.later: asyncio.TimerHandle | None = None  # its latency or hang
        self.hung: Callable[[], None] | None = None  # ends a hang at once

    # -- asyncio's calls ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        # Small answers on a kept-alive connection would otherwise wait for the
        # client's delayed ACK (Nagle's algorithm): tens of milliseconds each.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        self.fake.count_connection()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if not self.busy:
            self._next()

    def eof_received(self) -> bool | None:
        if not self.busy:
            self._close()
        return True  # half-closed: an answer on its way may still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)

    # -- requests -----------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def stop(self) -> None:
        """The server stops: a hung request ends now, the connection closes."""
        if self.hung is not None:
            self.hung()
        if self.transport is not None:
            self.transport.abort()

    def _next(self) -> None:
        """Answer the requests that have come whole, until one must wait."""
        try:
            while not self.busy and self.transport is not None:
                if self.transport.is_closing():
                    return
                if self.request is None:
                    lines = take_head(self.data)
                    if lines is None:
                        return
                    self.request = parse_head(lines)
                    if self.request is None:
                        self._close()
                        return
                    expect = (self.request.fields.get("Expect") or "").lower()
                    if expect == "100-continue" and self.request.version == "HTTP/1.1":
                        self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request = self.request
                if len(self.data) < request.length:
                    return
                raw = bytes(self.data[: request.length])
                del self.data[: request.length]
                self.request = None
                self._answer(request, raw)
        except _Refused as refused:
            self._write(refused.data)
            self._close()
        except (ValueError, TypeError) as exc:  # a control request it cannot read
            self._write(error_answer(400, str(exc)))
            self._close()

    def _answer(self, request: Request, raw: bytes) -> None:
        fake = self.fake
        log.debug('fake SendGrid: "%s %s %s"', request.method, request.path, request.version)
        if request.method == "GET":
            control = {
                "/_fake/stats": fake.stats,
                "/_fake/send_ids": fake.send_ids,
                "/_fake/send_history": fake.send_history,
            }.get(request.path)
            if control is None:
                self._write(answer_bytes(404, _errors("not found")))
            else:
                self._write(answer_bytes(200, json.dumps(control()).encode()))
        elif request.method != "POST":
            raise _Refused(error_answer(501, f"Unsupported method ({request.method!r})"))
        elif request.path == "/_fake/enqueue":
            fake.enqueue(**json.loads(raw))
            self._write(answer_bytes(204, b""))
        elif request.path != MAIL_SEND_PATH:
            self._write(answer_bytes(404, _errors("not found")))
        else:
            self.busy = True
            if fake.latency:
                self.later = self.server.loop.call_later(
                    fake.latency, self._mail_send, request, raw
                )
            else:
                self._mail_send(request, raw)
            return
        if request.close:
            self._close()

    def _mail_send(self, request: Request, raw: bytes) -> None:
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        answer = decide(self.fake, request.fields, body)
        if answer.then == "hang":

            def end() -> None:
                self.hung = None
                if self.later is not None:
                    self.later.cancel()
                self._settle(request, raw, body, answer)

            self.hung = end
            self.later = self.server.loop.call_later(answer.hang_for, end)
        else:
            self._settle(request, raw, body, answer)

    def _settle(self, request: Request, raw: bytes, body: Any, answer: Answer) -> None:
        # Counted before the answer leaves: a client that has its answer finds
        # the request recorded, and a mail send whose client went away while
        # it was answered was received all the same (a real provider delivers it).
        self.fake.record_request(
            request.path,
            request.fields.items(),
            raw,
            body,
            answer.status,
            answer.message_id,
            answer.kind,
            answer.reset_at,
        )
        self.later = None
        if answer.then == "reset":
            # SO_LINGER with a zero timeout makes the close a TCP reset.
            if self.transport is not None:
                sock = self.transport.get_extra_info("socket")
                with contextlib.suppress(OSError, AttributeError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.transport.abort()
            return
        if answer.then != "keep":  # drop, lost answer, hang: closed without an answer
            self._close()
            return
        if answer.status is not None:
            self._write(answer_bytes(answer.status, answer.payload, answer.headers))
        self.busy = False
        if request.close:
            self._close()
        else:
            self._next()
