"""How the fake SendGrid answers one HTTP request: its server, request handler and scripted faults.

:class:`~nurture.testing.fake_sendgrid.FakeSendGrid` keeps the state (the queue
of behaviours, what was received, the connections) and its lifecycle; this
module is the wire side of it: the ``ThreadingHTTPServer`` and the handler that
reads each ``POST /v3/mail/send``, takes the next queued :class:`Behaviour`,
checks the body as the real API would and writes the answer (202 with an
``X-Message-Id``, SendGrid's error JSON, a 429 with its rate-limit headers, or a
hang, drop or reset), plus the ``/_fake/...`` control endpoints. The behaviours
are listed in :mod:`nurture.testing.fake_sendgrid`.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import logging
import math
import os
import socket
import ssl
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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

    def __init__(self) -> None:
        self._items: list[tuple[str, str]] = []
        self._first: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))
        self._first.setdefault(name.lower(), value)

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


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # hung or idle keep-alive handlers must not delay stop()
    request_queue_size = 1024  # the listen backlog: 128 clients connecting at once
    fake: FakeSendGrid

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is normal here (timeouts, drops).
        log.debug("fake SendGrid: error handling %s", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API
    server_version = "FakeSendGrid/1.0"
    # Buffer the status line, headers and body and send them with one write (the
    # handler flushes after each request) rather than one per header line.
    wbufsize = -1
    server: Server
    raw_requestline: bytes  # set by handle_one_request before parse_request
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
        self.server.fake.track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            if self._reset:
                # SO_LINGER with a zero timeout makes close() send RST instead of FIN;
                # detach first, or socketserver would shut the socket down (FIN) itself.
                self.server.fake.track_connection(self.connection, add=False)
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                os.close(self.connection.detach())
            super().finish()
        finally:
            self.server.fake.track_connection(self.connection, add=False)

    def parse_request(self) -> bool:
        """Read the request line and headers; the common case without ``email.parser``.

        The standard library parses headers with the email package, about a
        third of the fake's time per mail send, which on a two-core machine is
        taken from the workers it measures. A plain ``METHOD PATH HTTP/1.x``
        request line is followed here, and a malformed header line answered
        400 (too many, 431); any other request line goes to the standard
        library's parser, which answers its errors.
        """
        words = self.raw_requestline.split()
        if len(words) != 3 or words[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            return super().parse_request()
        self.requestline = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
        self.command, path, version = (word.decode("iso-8859-1") for word in words)
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path
        self.request_version = version
        headers = self._read_fields()
        if headers == 400:
            self.send_error(400, "Bad header line")
            return False
        if headers == 431:
            self.send_error(431, "Too many headers")
            return False
        assert isinstance(headers, Fields)
        self.headers = headers  # type: ignore[assignment]  # what the handler reads of it
        connection = (headers.get("Connection") or "").lower()
        self.close_connection = version == "HTTP/1.0" and connection != "keep-alive"
        if connection == "close":
            self.close_connection = True
        if (headers.get("Expect") or "").lower() == "100-continue" and version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _read_fields(self) -> Fields | int:
        """The header section, or the status that refuses it (400, 431).

        When the whole section is already buffered and its lines end in CRLF
        (a client's usual request), it is taken in one read; otherwise line by line.
        """
        reader = self.rfile
        assert isinstance(reader, io.BufferedReader)  # socket.makefile("rb") with a buffer
        buffered = reader.peek(_MAX_HEADER_LINE)
        if buffered.startswith(b"\r\n"):  # no fields at all
            self.rfile.read(2)
            return Fields()
        end = buffered.find(b"\r\n\r\n")
        if end >= 0 and buffered.count(b"\n", 0, end) == buffered.count(b"\r\n", 0, end):
            lines = self.rfile.read(end + 4)[:end].decode("iso-8859-1").split("\r\n")
            if len(lines) > _MAX_HEADERS:
                return 431
            return self._fields(lines)
        raw: list[str] = []
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_HEADER_LINE + 1)
            if line in (b"\r\n", b"\n", b""):
                return self._fields(raw)
            if len(line) > _MAX_HEADER_LINE:
                return 400
            raw.append(line.decode("iso-8859-1").rstrip("\r\n"))
        return 431

    @staticmethod
    def _fields(lines: list[str]) -> Fields | int:
        fields = Fields()
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon or len(line) + 2 > _MAX_HEADER_LINE or name != name.strip():
                return 400
            fields.add(name, value.strip())
        return fields

    def handle_expect_100(self) -> bool:
        # The answer is buffered (wbufsize); the interim one must leave before the body.
        super().handle_expect_100()
        self.wfile.flush()
        return True

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
                fake.record_request(
                    self.path, self.headers.items(), raw, body, status, message_id, "gone"
                )
            raise
        fake.record_request(
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
        behaviour = fake.next_behaviour()
        kind = behaviour.kind if behaviour else "accept"
        if kind == "hang":
            fake.stopping.wait(behaviour.seconds if behaviour else 0.0)
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
        """Write one answer as ``send_response`` and ``send_header`` would (the
        same lines in the same order), in one piece."""
        self._answering = (status, headers.get("X-Message-Id"))
        self.log_request(status)
        phrase = self.responses[status][0] if status in self.responses else ""
        lines = [
            f"{self.protocol_version} {status} {phrase}",
            f"Server: {self.version_string()}",
            f"Date: {_date()}",
        ]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if payload:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(payload)}")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
