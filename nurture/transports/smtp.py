"""The SMTP transport: any SMTP server (a relay, Postfix, a provider's SMTP endpoint).

Connections are kept in a small lock-protected pool
(:mod:`nurture.transports.smtp_pool`; ``max_connections``, default 8: a relay
rarely wants more from one client) and reused across emails; one that has been
idle for ``idle_timeout`` seconds is closed rather than reused, as servers drop
idle clients (RFC 5321 §4.5.3.2.7). A pooled connection the server has closed
is detected on the first command and replaced once.

Each email is one SMTP transaction (RFC 5321 §3.3: MAIL, RCPT, DATA) written
out here rather than through ``smtplib.sendmail``, so we know whether the
message had been handed over (the final ``.`` sent) when something failed:

* before that, nothing can have been delivered: a dropped connection or a
  timeout is a :class:`TransientSendError`;
* after it, only the server's reply was lost: :class:`AmbiguousSendError`
  (RFC 5321 §4.1.4 and §6.1 discuss exactly this duplicate-delivery risk).

Replies map by class (RFC 5321 §4.2.1): 4xx is transient, 5xx permanent; a 5xx
to RCPT marks the address invalid. A refused login, or STARTTLS/AUTH missing
when configured, is an :class:`AuthenticationError`: dispatching stops.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from typing import TYPE_CHECKING, Self

from nurture.core.rendering import AddressEncodingError, ascii_address, needs_smtputf8
from nurture.errors import (
    AmbiguousSendError,
    AuthenticationError,
    ConfigurationError,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from nurture.transports.base import (
    BaseTransport,
    OutgoingEmail,
    SendResult,
    message_id_of,
    redact,
)
from nurture.transports.smtp_pool import ConnectionPool

if TYPE_CHECKING:
    from nurture.app.settings import Settings


_SSLContext = ssl.SSLContext  # the constructor's ``ssl`` flag hides the module there


@dataclass
class _Progress:
    """How far one attempt got; decides what a failure means."""

    connected: bool = False
    reused: bool = False
    handed_over: bool = False  # the whole message and the final "." were sent


@dataclass
class _Envelope:
    """One email's SMTP transaction: who sends it, and how far the last attempt got."""

    sender: str
    email: OutgoingEmail
    progress: _Progress = field(default_factory=_Progress)


def _payload(message_bytes: bytes) -> bytes:
    """The DATA section: CRLF line ends, dot-stuffed (RFC 5321 §4.5.2), then ``.``."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", message_bytes)
    data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class SMTPTransport(BaseTransport[_Envelope, str]):
    """Sends through an SMTP server. Thread-safe; see the module docstring."""

    name = "smtp"
    display_name = "SMTP"

    def __init__(
        self,
        host: str = "localhost",
        port: int = 25,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        ssl: bool = False,
        timeout: float = 30.0,
        max_connections: int = 8,
        idle_timeout: float = 30.0,
        ssl_context: _SSLContext | None = None,
        envelope_from: str | None = None,
    ) -> None:
        if starttls and ssl:
            raise ConfigurationError(
                "settings 'smtp_starttls' (NURTURE_SMTP_STARTTLS) and 'smtp_ssl' "
                "(NURTURE_SMTP_SSL) exclude each other: STARTTLS upgrades a plain "
                "connection (port 587), smtp_ssl starts with TLS (port 465)"
            )
        if username and password is None:
            raise ConfigurationError(
                "setting 'smtp_password' (NURTURE_SMTP_PASSWORD) is required when "
                "smtp_username is set"
            )
        if not ((username or "") + (password or "")).isascii():
            # smtplib encodes AUTH PLAIN/LOGIN as ASCII; every login would fail.
            raise ConfigurationError(
                "settings 'smtp_username' and 'smtp_password' (NURTURE_SMTP_USERNAME, "
                "NURTURE_SMTP_PASSWORD) must be ASCII: Python's smtplib cannot send others"
            )
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.starttls = starttls
        self.ssl = ssl
        self.timeout = timeout
        self.envelope_from = envelope_from
        self._ssl_context = ssl_context or _default_context()
        self._pool = ConnectionPool(self._connect, max_connections, idle_timeout, timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            ssl=settings.smtp_ssl,
        )

    def __repr__(self) -> str:
        return f"SMTPTransport({self.host!r}, {self.port})"

    def secrets(self) -> tuple[str, ...]:
        return (self._password,) if self._password else ()

    def _connect(self) -> smtplib.SMTP:
        connection: smtplib.SMTP
        if self.ssl:
            connection = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self._ssl_context
            )
        else:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            connection.ehlo_or_helo_if_needed()
            if self.starttls:
                connection.starttls(context=self._ssl_context)
                connection.ehlo()
            if self.username:
                connection.login(self.username, self._password or "")
        except BaseException:
            connection.close()
            raise
        return connection

    def build_request(self, email: OutgoingEmail) -> _Envelope:
        return _Envelope(self.envelope_from or _sender_address(email), email)

    def call(self, request: _Envelope) -> str:
        """One transaction on a pooled connection; the server's final reply."""
        for attempt in (1, 2):
            progress = request.progress = _Progress()
            connection = None
            try:
                connection, progress.reused = self._pool.checkout()
                progress.connected = True
                reply = self._transaction(connection, request.sender, request.email, progress)
            except (SendError, AddressEncodingError):
                # Refused before MAIL (this email's addresses): the session is clean.
                if connection is not None:
                    self._pool.checkin(connection)
                raise
            except (smtplib.SMTPException, OSError) as exc:
                if connection is not None:
                    self._release_after_error(connection, exc)
                if attempt == 1 and _server_closed_reused(exc, progress):
                    continue  # the pool's connection had gone stale: one fresh try
                raise  # translate_error reads request.progress
            except BaseException:
                if connection is not None:
                    self._pool.discard(connection)
                raise
            self._pool.checkin(connection)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def parse_result(self, email: OutgoingEmail, request: _Envelope, response: str) -> SendResult:
        return SendResult(
            provider=self.name,
            message_id=message_id_of(email.message),
            raw={"reply": response, "host": self.host, "port": self.port},
        )

    def translate_error(self, exc: Exception, request: _Envelope) -> SendError | None:
        if isinstance(exc, smtplib.SMTPException | OSError):
            return self._translate(exc, request.progress, request.email.to_email)
        return None

    def _transaction(
        self, connection: smtplib.SMTP, sender: str, email: OutgoingEmail, progress: _Progress
    ) -> str:
        # Everything that can refuse this one email comes before MAIL, so the
        # connection stays clean for the next (see call()).
        # A Unicode domain goes out in IDNA A-labels: no extension needed for it.
        recipient = ascii_address(email.to_email, utf8=True)
        sender = ascii_address(sender, utf8=True)
        options: list[str] = []
        output_policy = policy.SMTP
        utf8 = email.needs_smtputf8() or needs_smtputf8(sender)
        if utf8:
            # A non-ASCII local part needs the server's SMTPUTF8 extension (RFC 6531).
            if not connection.has_extn("smtputf8"):
                needing = recipient if needs_smtputf8(recipient) else sender
                raise PermanentSendError(
                    f"not sent: {self.host}:{self.port} does not offer SMTPUTF8, which the "
                    f"address {needing!r} needs (its local part is not ASCII)"
                )
            options.append("SMTPUTF8")
            output_policy = policy.SMTPUTF8
        if connection.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")  # RFC 6152
        else:
            # Without 8BITMIME, 8-bit text parts must be re-encoded (base64 / QP).
            output_policy = output_policy.clone(cte_type="7bit")
        if email.composed is not None:
            # Already 7-bit: quoted-printable bodies, RFC 2047 encoded headers
            # (with SMTPUTF8, addresses with a non-ASCII local part as UTF-8).
            data = _payload(email.raw_bytes(utf8=utf8))
        else:
            data = _payload(email.as_message().as_bytes(policy=output_policy))

        code, text = connection.mail(sender, options)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, text, sender)
        code, text = connection.rcpt(recipient)
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({recipient: (code, text)})
        code, text = connection.docmd("DATA")
        if code != 354:
            raise smtplib.SMTPDataError(code, text)
        connection.send(data)
        progress.handed_over = True
        code, text = connection.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, text)
        return f"{code} {text.decode('utf-8', 'replace')}"

    def _release_after_error(self, connection: smtplib.SMTP, exc: BaseException) -> None:
        """Keep a connection that only had a command refused; drop any other."""
        if isinstance(exc, smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused) and (
            getattr(exc, "smtp_code", 0) != 421
        ):
            try:
                connection.rset()  # abort the transaction, keep the session
            except (smtplib.SMTPException, OSError):
                self._pool.discard(connection)
            else:
                self._pool.checkin(connection)
            return
        self._pool.discard(connection)

    def _translate(self, exc: BaseException, progress: _Progress, recipient: str) -> SendError:
        """The one place where smtplib and socket errors become send errors."""
        where = f"{self.host}:{self.port}"
        detail = redact(str(exc), self._password)
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return AuthenticationError(
                f"SMTP server {where} refused the login ({detail}). Check smtp_username "
                "and smtp_password (NURTURE_SMTP_USERNAME, NURTURE_SMTP_PASSWORD).",
                status=exc.smtp_code,
            )
        if not progress.connected and (
            isinstance(exc, smtplib.SMTPNotSupportedError | ssl.SSLCertVerificationError)
            or type(exc) is smtplib.SMTPException
        ):
            # STARTTLS or AUTH configured but not offered, no usable AUTH method,
            # or a certificate we cannot trust: every send would fail the same way.
            return AuthenticationError(
                f"cannot set up the SMTP session with {where}: {detail}. Check smtp_host, "
                "smtp_starttls, smtp_ssl and smtp_username (NURTURE_SMTP_*).",
            )
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, text = next(iter(exc.recipients.values()), (0, b""))
            reply = f"{code} {_text(text)}"
            if 400 <= code < 500:
                return TransientSendError(
                    f"{where} deferred recipient {recipient}: {reply}", status=code
                )
            return PermanentSendError(
                f"{where} refused recipient {recipient}: {reply}",
                status=code,
                invalid_address=True,
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            code = exc.smtp_code
            reply = f"{code} {redact(_text(exc.smtp_error), self._password)}"
            if 400 <= code < 500:
                return TransientSendError(f"{where} answered {reply}; not sent", status=code)
            if not progress.connected:
                # The greeting or EHLO was refused: no email can go through it.
                return AuthenticationError(
                    f"SMTP server {where} refused the session: {reply}. Check smtp_host "
                    "and smtp_port (NURTURE_SMTP_HOST, NURTURE_SMTP_PORT).",
                    status=code,
                )
            return PermanentSendError(f"{where} refused the email: {reply}", status=code)
        if isinstance(exc, smtplib.SMTPServerDisconnected) or not isinstance(
            exc, smtplib.SMTPException
        ):
            # The connection itself failed or timed out (smtplib reports a read
            # timeout as SMTPServerDisconnected).
            if progress.handed_over:
                return AmbiguousSendError(
                    f"no reply from {where} after the message was sent ({detail}); it may "
                    "have been accepted"
                )
            return TransientSendError(f"not sent: SMTP connection to {where} failed: {detail}")
        return PermanentSendError(f"SMTP error from {where}: {detail}")

    def release(self) -> None:
        self._pool.close()


def _default_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _sender_address(email: OutgoingEmail) -> str:
    """The envelope sender (MAIL FROM): Sender, else the first From address."""
    for name in ("Sender", "From"):
        for address in email.addresses(name):
            if isinstance(address, Address) and address.addr_spec:
                return address.addr_spec
    raise PermanentSendError("the message has no From address")


def _server_closed_reused(exc: BaseException, progress: _Progress) -> bool:
    """A reused connection the server had already closed (or is closing: 421)."""
    if not progress.reused or progress.handed_over:
        return False
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, smtplib.SMTPServerDisconnected | ConnectionError)
