"""The SendGrid transport: v3 Mail Send (https://www.twilio.com/docs/sendgrid/api-reference/mail-send).

Three steps, as in django-anymail's backends:

1. **Build** the request body and 2. **check** it against the API's documented
   limits: :mod:`nurture.transports.sendgrid_mail` (what is sent).
3. **Post** it, either through the official client (``pooled=False``: one new
   connection per email) or, by default, the same JSON bytes and headers over a
   pool of keep-alive connections (``http.client``, what the official client
   uses underneath), which is what reaching 1,000 emails/s takes. Both paths
   classify answers and errors in the same two places, :func:`error_for_status`
   and :meth:`SendGridTransport.translate_error`.

The flow around the steps (closed check, error translation) is
:class:`~nurture.transports.base.BaseTransport`'s.

The API key never appears in an exception message or a log record: it is
redacted by value (whatever its format) from every send error, and by pattern
(``SG.…``, ``Bearer …``) from the library's log records.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import ssl
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Self

import python_http_client.exceptions
import sendgrid

from nurture.errors import (
    AmbiguousSendError,
    AuthenticationError,
    ConfigurationError,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from nurture.transports.base import BaseTransport, OutgoingEmail, SendResult, redact
from nurture.transports.http_pool import KeepAlivePool
from nurture.transports.http_wire import Reply, lower_keys
from nurture.transports.sendgrid_mail import (
    REQUIRED_HEADERS,
    build_mail_body,
    is_address,
    validate_mail_body,
)

if TYPE_CHECKING:
    from nurture.app.settings import Settings

DEFAULT_HOST = "https://api.sendgrid.com"
MAIL_SEND_PATH = "/v3/mail/send"

_ONE_YEAR = 365 * 24 * 3600.0
_RECIPIENT_FIELD = re.compile(r"personalizations\.\d+\.(to|cc|bcc)\.\d+\.email")
# What python_http_client logs at DEBUG includes the Authorization header.
_SECRET_PATTERNS = re.compile(r"(?i)(bearer\s+)[^\s'\",}]+|SG\.[\w-]+\.[\w-]+")


# -- reading the answer --------------------------------------------------------


def error_for_status(reply: Reply, now: float, secrets: Iterable[str] = ()) -> SendError:
    """The one mapping from a non-2xx answer to a send error (both clients use it).

    ``secrets`` are redacted from the provider's text before it is cut short,
    so not even a prefix of one survives.
    """
    status, detail = reply.status, _error_detail(reply.body, tuple(secrets))
    if status in (401, 403):
        refused = "the API key" if status == 401 else "the request"
        return AuthenticationError(
            f"SendGrid refused {refused} (HTTP {status}: {detail}). Check "
            "sendgrid_api_key (NURTURE_SENDGRID_API_KEY): the key is wrong, revoked, or "
            "lacks the mail.send permission (a 403 can also mean the From address is "
            "not a verified sender). Dispatching stops until this is fixed.",
            status=status,
        )
    if status == 429 or status == 408 or status >= 500:
        return TransientSendError(
            f"SendGrid answered HTTP {status} ({detail}); not sent, retry later",
            status=status,
            retry_after=retry_after_seconds(reply.headers, now),
        )
    return PermanentSendError(
        f"SendGrid rejected the email (HTTP {status}): {detail}",
        status=status,
        invalid_address=status == 400 and _recipient_rejected(reply.body),
    )


def _error_list(body: bytes) -> list[dict[str, Any]]:
    try:
        errors = json.loads(body).get("errors")
    except (ValueError, AttributeError):
        return []
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _error_detail(body: bytes, secrets: tuple[str, ...] = ()) -> str:
    errors = _error_list(body)
    if errors:
        detail = "; ".join(
            f"{e.get('message')} ({e['field']})" if e.get("field") else str(e.get("message"))
            for e in errors
        )
        return _redact_keys(redact(detail, *secrets))
    detail = redact(body.decode("utf-8", "replace"), *secrets)
    return _redact_keys(detail[:200]) or "no details"


def _recipient_rejected(body: bytes) -> bool:
    return any(_RECIPIENT_FIELD.fullmatch(str(e.get("field") or "")) for e in _error_list(body))


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait, from ``Retry-After`` (RFC 9110 §10.2.3) or ``X-RateLimit-Reset``.

    SendGrid sends ``X-RateLimit-Reset`` as an epoch timestamp (rate-limits doc);
    a value under a year is read as a delay in seconds, as some proxies send.
    """
    retry_after = headers.get("retry-after")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(retry_after).timestamp() - now)
            except (TypeError, ValueError):
                pass
    reset = headers.get("x-ratelimit-reset")
    if reset:
        try:
            value = float(reset)
        except ValueError:
            return None
        return max(0.0, value - now if value > _ONE_YEAR else value)
    return None


def check_api_host(host: str) -> None:
    """Raise :class:`ConfigurationError` unless ``host`` is an http(s) URL."""
    try:
        parts = urllib.parse.urlsplit(host)
        # .port raises ValueError for a port that is not a number.
        valid_host = parts.scheme in ("http", "https") and bool(parts.hostname)
        valid_host = valid_host and (parts.port or 0) >= 0
    except ValueError:
        valid_host = False
    if not valid_host:
        raise ConfigurationError(
            "setting 'sendgrid_api_host' (NURTURE_SENDGRID_API_HOST) must be an "
            f"http:// or https:// URL, got {host!r}"
        )


# -- logging -------------------------------------------------------------------


def _redact_keys(text: str) -> str:
    return _SECRET_PATTERNS.sub(lambda m: f"{m.group(1) or ''}[redacted]", text)


class _RedactSecrets(logging.Filter):
    """Rewrites records that carry ``Bearer <key>`` or an ``SG.`` key."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _redact_keys(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _quiet_library_logs() -> None:
    # python_http_client logs every request's headers (Authorization included)
    # and payload (subscribers' addresses) at DEBUG. Unless the application set
    # its level on purpose, keep it at WARNING; and redact keys regardless.
    library = logging.getLogger("python_http_client")
    if library.level == logging.NOTSET:
        library.setLevel(logging.WARNING)
    client_logger = logging.getLogger("python_http_client.client")
    if not any(isinstance(f, _RedactSecrets) for f in client_logger.filters):
        client_logger.addFilter(_RedactSecrets())


# -- the transport -------------------------------------------------------------


class SendGridTransport(BaseTransport[dict[str, Any], Reply]):
    """Sends through SendGrid's v3 Mail Send API. Thread-safe.

    ``pooled=True`` (default) posts the official client's request (same JSON
    bytes, same headers) over up to ``max_connections`` keep-alive connections,
    all driven by one thread, and is :attr:`multiplexed`: :meth:`submit`
    returns before the answer. ``pooled=False`` calls the official client,
    which opens a connection per email. ``timeout``, in seconds, bounds
    connecting and each read (official client); pooled, it bounds connecting,
    the wait for a free connection, and the answer once the request went out.
    ``wall_clock`` (for tests) is what the epoch in ``X-RateLimit-Reset`` is
    compared with.
    """

    name = "sendgrid"
    display_name = "SendGrid"

    def __init__(
        self,
        api_key: str,
        *,
        host: str = DEFAULT_HOST,
        timeout: float = 10.0,
        pooled: bool = True,
        max_connections: int = 128,
        required_headers: Collection[str] = REQUIRED_HEADERS,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key or not api_key.strip():
            raise ConfigurationError(
                "setting 'sendgrid_api_key' (in nurture.toml as sendgrid_api_key, or "
                "NURTURE_SENDGRID_API_KEY) is required for transport 'sendgrid'"
            )
        check_api_host(host)
        _quiet_library_logs()
        self._api_key = api_key
        self.host = host.rstrip("/")
        self.timeout = timeout
        self.pooled = pooled
        self.multiplexed = pooled
        self.required_headers = tuple(required_headers)
        self._wall_clock = wall_clock
        self._client = sendgrid.SendGridAPIClient(api_key=api_key, host=self.host)
        # python_http_client adds Content-Type to this shared dict on the first
        # post; another thread copying the dict at that moment would fail. Add it now.
        self._client.client.request_headers["Content-Type"] = "application/json"
        self._headers: dict[str, str] = dict(self._client.client.request_headers)
        self._path = urllib.parse.urlsplit(self.host).path + MAIL_SEND_PATH
        self._pool = (
            KeepAlivePool(self.host, timeout=timeout, size=max_connections) if pooled else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            settings.sendgrid_api_key or "",
            host=settings.sendgrid_api_host,
            timeout=settings.sendgrid_timeout,
        )

    def __repr__(self) -> str:
        return f"SendGridTransport(host={self.host!r}, pooled={self.pooled})"

    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,)

    def scrub(self, text: str) -> str:
        return _redact_keys(super().scrub(text))

    def build_request(self, email: OutgoingEmail) -> dict[str, Any]:
        body = build_mail_body(email)
        required = () if email.transactional else self.required_headers
        problems = validate_mail_body(body, required_headers=required)
        if problems:
            raise PermanentSendError(
                "the SendGrid request would be rejected: " + "; ".join(problems),
                invalid_address=not is_address(email.to_email),
            )
        return body

    def call(self, request: dict[str, Any]) -> Reply:
        if self._pool is not None:
            # Exactly the bytes python_http_client sends for this body.
            data = json.dumps(request).encode("utf-8")
            return self._pool.post(self._path, data, self._headers)
        return self._post(request)

    def call_later(
        self, request: dict[str, Any], settle: Callable[[Reply | Exception], None]
    ) -> None:
        """Pooled: handed to the pool's thread, which calls ``settle`` with the answer."""
        if self._pool is None:
            super().call_later(request, settle)
            return
        try:
            data = json.dumps(request).encode("utf-8")
            self._pool.submit(self._path, data, self._headers, settle)
        except Exception as exc:  # not handed over (a header that cannot be written)
            settle(exc)

    def parse_result(
        self, email: OutgoingEmail, request: dict[str, Any], response: Reply
    ) -> SendResult:
        if not 200 <= response.status < 300:
            raise error_for_status(response, self._wall_clock(), self.secrets())
        return SendResult(
            provider=self.name,
            message_id=response.headers.get("x-message-id"),
            raw={"status": response.status, "headers": dict(response.headers)},
        )

    def _post(self, body: dict[str, Any]) -> Reply:
        """Through the official client. Its send() has no timeout, so call post()."""
        try:
            response = self._client.client.mail.send.post(request_body=body, timeout=self.timeout)
        except python_http_client.exceptions.HTTPError as exc:
            # It raises for every status >= 400; turn that back into an answer so
            # both paths classify statuses in error_for_status.
            return Reply(exc.status_code, lower_keys(exc.headers.items()), exc.body or b"")
        return Reply(response.status_code, lower_keys(response.headers.items()), response.body)

    def translate_error(self, exc: Exception, request: dict[str, Any]) -> SendError | None:
        """The one place where network errors become send errors (both paths)."""
        if isinstance(exc, urllib.error.URLError):
            # urllib (and our pool, in its image) wraps what fails while connecting
            # and sending: refused, DNS, TLS, connect timeout. Nothing was accepted.
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                # Not SendGrid, or a TLS-intercepting proxy: retrying will not
                # help. Stop dispatching, as for a refused key.
                return AuthenticationError(
                    f"not sent: the TLS certificate of {self.host} cannot be verified "
                    f"({exc.reason.verify_message}); check sendgrid_api_host "
                    "(NURTURE_SENDGRID_API_HOST) and the system's trusted certificates"
                )
            message = f"not sent: cannot reach SendGrid at {self.host}: {exc.reason!r}"
            return TransientSendError(redact(message, self._api_key))
        if isinstance(exc, TimeoutError):
            return AmbiguousSendError(
                f"no answer from SendGrid within {self.timeout} s after the request was "
                "sent; it may have accepted the email"
            )
        if isinstance(exc, http.client.HTTPException | OSError):
            # The connection dropped or was reset, or the answer was garbled,
            # after the whole request had gone out.
            message = (
                f"the connection to SendGrid failed after the request was sent ({exc!r}); "
                "it may have accepted the email"
            )
            return AmbiguousSendError(redact(message, self._api_key))
        return None

    def release(self) -> None:
        if self._pool is not None:
            self._pool.close()
