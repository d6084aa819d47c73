"""What the transport tests share: emails shaped like the dispatcher's, sending
from many threads, and a fake SMTP server on 127.0.0.1.

Used by ``tests/unit/test_transports.py`` and ``tests/contract/``.
"""

from __future__ import annotations

import base64
import socket
import socketserver
import threading
from collections import deque
from datetime import datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Self

from nurture.core.rendering import ComposedEmail, RenderedEmail
from nurture.transports.base import OutgoingEmail, SendResult, Transport

SENT_AT = datetime(2026, 11, 27, 16, 30, tzinfo=timezone(timedelta(hours=1)))  # 15:30 UTC


def make_email(
    *,
    send_id: str = "send-1",
    to: str = "bo@example.org",
    date: datetime | None = SENT_AT,
    text: str = "Hej Bo!\n\nVälkommen.\n",
    step_id: str = "welcome",
) -> OutgoingEmail:
    """A message shaped like the dispatcher's, built by hand."""
    message = EmailMessage()
    message["From"] = "Anna på Exempel AB <anna@example.com>"
    message["To"] = f"Bo Ek <{to}>"
    message["Reply-To"] = "Anna <svar@example.com>"
    message["Subject"] = "Välkommen – första steget"
    if date is not None:
        message["Date"] = format_datetime(date)
    message["Message-ID"] = f"<{send_id}@nurture.example.com>"
    message["List-Unsubscribe"] = f"<https://example.com/u/{send_id}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["List-Id"] = "Välkomstserien <welcome.list.example.com>"
    message["X-Nurture-Send-Id"] = send_id
    message.set_content(text)
    message.add_alternative(f"<p>{text}</p>", subtype="html")
    return OutgoingEmail(message, send_id, "welcome-series", step_id, to)


def make_composed(*, send_id: str = "send-1", to: str = "bo@example.org") -> OutgoingEmail:
    """The same email as the dispatcher hands it over: a ComposedEmail, not an EmailMessage."""
    rendered = RenderedEmail(
        subject="Välkommen – första steget",
        preheader="",
        text="Hej Bo!\n\nVälkommen.\n",
        html="<p>Hej Bo!</p><p>Välkommen.</p>",
        headers={
            "List-Unsubscribe": f"<https://example.com/u/{send_id}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": "Välkomstserien <welcome.list.example.com>",
            "X-Nurture-Send-Id": send_id,
        },
    )
    composed = ComposedEmail(
        rendered=rendered,
        sender_name="Anna på Exempel AB",
        sender_email="anna@example.com",
        reply_to="svar@example.com",
        to_email=to,
        to_name="Bo Ek",
        message_id=f"<{send_id}.welcome@example.com>",
        date=SENT_AT,
    )
    return OutgoingEmail(composed, send_id, "welcome-series", "welcome", to)


def send_from_threads(
    transport: Transport, emails: list[OutgoingEmail], threads: int
) -> list[SendResult]:
    """Send ``emails`` from ``threads`` threads at once, each taking every n-th.

    Returns the results; if any send raised, raises an ``ExceptionGroup`` of
    what the threads raised (a thread stops at its first failure), so a failed
    send fails the test rather than vanishing into the thread.
    """
    results: list[SendResult] = []
    errors: list[Exception] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)  # every thread sends at the same moment

    def work(chunk: list[OutgoingEmail]) -> None:
        start.wait()
        for email in chunk:
            try:
                result = transport.send(email)
            except Exception as exc:
                with lock:
                    errors.append(exc)
                return
            with lock:
                results.append(result)

    workers = [threading.Thread(target=work, args=(emails[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise ExceptionGroup(f"{len(errors)} of {threads} sending threads failed", errors)
    return results


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def text_of(message: EmailMessage) -> str:
    """The text part, with the CRLF line ends of the SMTP wire read as newlines."""
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeSMTPServer(socketserver.ThreadingTCPServer):
    """Just enough SMTP (RFC 5321) for the transport; told what to do through attributes.

    A context manager: ``with FakeSMTPServer() as server:`` serves on a thread.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # The listen backlog: socketserver's default of 5 drops connections when a
    # transport's threads all connect at once, and a dropped SYN is retried
    # only after a second, past the tests' timeouts.
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SMTPSession)
        self.extensions = ["8BITMIME", "SMTPUTF8", "SIZE 10240000"]
        self.credentials: tuple[str, str] | None = None
        self.greeting = "220 fake.example ESMTP"
        self.refuse_rcpt: dict[str, str] = {}  # address -> reply
        self.on_mail: deque[str] = deque()  # "drop" or a reply
        self.after_data: deque[str] = deque()  # "hang", "drop" or a reply
        self.close_after_message = False
        self.messages: list[tuple[str, list[str], list[str], bytes]] = []
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.hangups = 0  # sessions whose socket the server has closed
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self._hung_up = threading.Condition(self.lock)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def __enter__(self) -> Self:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()  # wakes sessions told to hang
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def shutdown_request(self, request: Any) -> None:
        # Called once a session has ended, to close its socket: what a test
        # waits for to know the server has hung up.
        super().shutdown_request(request)
        with self._hung_up:
            self.hangups += 1
            self._hung_up.notify_all()

    def wait_for_hangups(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until the server has closed ``count`` sessions in all."""
        with self._hung_up:
            return self._hung_up.wait_for(lambda: self.hangups >= count, timeout)


class SMTPSession(socketserver.StreamRequestHandler):
    server: FakeSMTPServer

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        server = self.server
        with server.lock:
            server.connections += 1
            server.open_now += 1
            server.most_open = max(server.most_open, server.open_now)
        try:
            self.session(server)
        finally:
            with server.lock:
                server.open_now -= 1

    def session(self, server: FakeSMTPServer) -> None:
        self.reply(server.greeting)
        if not server.greeting.startswith("220"):
            return
        sender, recipients, options = "", list[str](), list[str]()
        while line := self.rfile.readline():
            command = line.decode("utf-8").rstrip("\r\n")
            verb, _, argument = command.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                lines = ["fake.example", *server.extensions]
                if server.credentials:
                    lines.append("AUTH PLAIN")
                for text in lines[:-1]:
                    self.reply(f"250-{text}")
                self.reply(f"250 {lines[-1]}")
            elif verb == "AUTH":
                _, _, encoded = argument.partition(" ")
                _, user, password = base64.b64decode(encoded).decode().split("\0")
                if (user, password) == server.credentials:
                    self.reply("235 2.7.0 Authentication successful")
                else:
                    self.reply("535 5.7.8 Authentication credentials invalid")
            elif verb == "MAIL":
                action = server.on_mail.popleft() if server.on_mail else "250 2.1.0 Ok"
                if action == "drop":
                    return
                address, _, rest = argument.partition(">")
                sender, recipients, options = address.split("<", 1)[1], [], rest.split()
                self.reply(action)
            elif verb == "RCPT":
                address = argument.split("<", 1)[1].rstrip(">")
                reply = server.refuse_rcpt.get(address, "250 2.1.5 Ok")
                if reply.startswith("250"):
                    recipients.append(address)
                self.reply(reply)
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                data = b""
                while (chunk := self.rfile.readline()) != b".\r\n":
                    if not chunk:
                        return
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                action = server.after_data.popleft() if server.after_data else "250"
                if action == "hang":
                    server.stopping.wait(5)
                    return
                if action == "drop":
                    return
                if action != "250":
                    self.reply(action)
                    continue
                with server.lock:
                    server.messages.append((sender, recipients, options, data))
                    number = len(server.messages)
                self.reply(f"250 2.0.0 Ok: queued as Q{number}")
                if server.close_after_message:
                    return
            elif verb in ("RSET", "NOOP"):
                self.reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:
                self.reply("502 5.5.2 Command not recognized")
