"""The one exception tree of nurture.

::

    NurtureError
    ├── ConfigurationError        a setting is missing or invalid (names the key
    │                             and the environment variable); stops the program
    ├── SequenceError             a sequence file or template is invalid; carries
    │                             the diagnostics (file:line:column: message)
    ├── TimingError               a due time cannot be computed (naive datetime,
    │                             no allowed day within two years)
    ├── RenderError               a template failed to render for a subscriber
    └── SendError                 a transport could not send a message
        ├── TransientSendError    retry later (429, 5xx, connection refused)
        ├── AmbiguousSendError    the provider may or may not have accepted it
        │                         (timeout after the request was sent): never
        │                         resend blindly
        └── PermanentSendError    never retry (400, 413, invalid address)
            └── AuthenticationError   401/403: the API key is wrong; stop dispatching
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass


def clip(text: str, limit: int = 40) -> str:
    """``text``, or its first ``limit`` characters and "…" when it is longer:
    how a message quotes a value that may be megabytes long."""
    return text if len(text) <= limit else text[:limit] + "…"


def clip_path(path: object, limit: int = 80) -> str:
    """``path`` as text, shortened from the front when it is longer than
    ``limit``: ``…/shop/afile``. The end of a path (the name the user typed)
    is what tells them which one; a clipped end would hide it."""
    text = str(path)
    if len(text) <= limit:
        return text
    tail = text[-(limit - 1) :]
    cut = tail.find("/")
    if cut >= 0:
        return "…" + tail[cut:]
    # The last name alone is longer than the limit (a name too long).
    return "…/" + clip(text.rsplit("/", 1)[-1], limit - 2)


def quoted(exc: Exception, value: str) -> str:
    """``exc``'s message with the value it quotes (``repr(value)``) shortened by :func:`clip`."""
    return str(exc).replace(repr(value), repr(clip(value)))


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a file, with its position (1-based line and column)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class NurtureError(Exception):
    """The root of every error nurture raises on purpose."""


class ConfigurationError(NurtureError):
    """A setting is missing or invalid. The message names the key and env var."""


class SequenceError(NurtureError):
    """A sequence (or one of its templates) is invalid."""

    def __init__(self, diagnostics: Seq[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class TimingError(NurtureError):
    """A due time cannot be computed."""


class RenderError(NurtureError):
    """A template failed to render."""


class SendError(NurtureError):
    """A transport could not send a message."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientSendError(SendError):
    """Try again later. ``retry_after`` is seconds to wait when the provider said."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class AmbiguousSendError(SendError):
    """The request may have been accepted: record ``unknown``, never resend blindly."""


class PermanentSendError(SendError):
    """Retrying will not help. ``invalid_address`` marks the subscriber invalid."""

    def __init__(
        self, message: str, *, status: int | None = None, invalid_address: bool = False
    ) -> None:
        super().__init__(message, status=status)
        self.invalid_address = invalid_address


class AuthenticationError(PermanentSendError):
    """The provider refused our credentials: stop dispatching, say so loudly."""
