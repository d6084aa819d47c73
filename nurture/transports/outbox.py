"""The outbox transport (the default): one ``.eml`` file per email, nothing leaves the machine.

Files are named ``<UTC time>-<send id>-<step id>.eml``, e.g.
``20261127T153000.123456Z-8f1c...-welcome.eml``, so a plain ``ls`` lists them in
sending order. The time is the message's ``Date`` header when it has one: the
dispatcher may run on an accelerated clock (``nurture simulate``), and the file
should sort by the time the email claims to have been sent. Each file holds
the message as :meth:`OutgoingEmail.raw_bytes` gives it (RFC 5322, non-ASCII
headers as RFC 2047 encoded words): mail clients open it, and
``email.parser.BytesParser(policy=email.policy.default)`` reads it back. An
address with a non-ASCII local part (``jörg@example.com``) is written as UTF-8
(RFC 6532), as an SMTPUTF8 server would receive it; a Unicode domain is
written in IDNA A-labels.

Writes are atomic: the bytes go to a hidden temporary file in the same folder,
are flushed to disk, and the file is renamed into place (``os.replace``), so a
reader never sees half an email. Sending the same ``send_id`` and step again
replaces the file: a retry cannot make a duplicate.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Self

from nurture.errors import SendError, TransientSendError
from nurture.transports.base import BaseTransport, OutgoingEmail, SendResult, message_id_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from nurture.app.settings import Settings

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(part: str) -> str:
    """A file-name-safe version of an id (ids are ours, but a path is not the place to trust)."""
    return _UNSAFE.sub("_", part).strip(".") or "_"


@dataclass(frozen=True)
class _File:
    """What one send writes, and where."""

    path: Path
    data: bytes


class OutboxTransport(BaseTransport[_File, None]):
    """Writes each email as an ``.eml`` file into ``directory`` (created if missing)."""

    name = "outbox"
    display_name = "outbox"
    delivers = False  # nothing leaves the machine

    def __init__(
        self, directory: Path | str, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.directory = Path(directory)
        self._clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.outbox_dir)

    def __repr__(self) -> str:
        return f"OutboxTransport({str(self.directory)!r})"

    def file_name(self, email: OutgoingEmail) -> str:
        """``<UTC time from Date, else now>-<send id>-<step id>.eml``."""
        when = self._sent_at(email)
        stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        return f"{stamp}-{_safe(email.send_id)}-{_safe(email.step_id)}.eml"

    def _sent_at(self, email: OutgoingEmail) -> datetime:
        when = email.date()  # None when missing or unparseable: the time of writing
        if when is not None:
            # RFC 5322 §3.3: "-0000" means the zone is unknown; read it as UTC.
            return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        return self._clock()

    def build_request(self, email: OutgoingEmail) -> _File:
        # A file has no SMTPUTF8 to negotiate: write what a server offering it gets.
        data = email.raw_bytes(utf8=email.needs_smtputf8())
        return _File(self.directory / self.file_name(email), data)

    def call(self, request: _File) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_atomically(request.path, request.data)

    def translate_error(self, exc: Exception, request: _File) -> SendError | None:
        if isinstance(exc, OSError):
            # A full disk or a permission problem; nothing was written under the
            # final name, so retrying later is safe.
            return TransientSendError(f"cannot write {request.path}: {exc}")
        return None

    def parse_result(self, email: OutgoingEmail, request: _File, response: None) -> SendResult:
        return SendResult(
            provider=self.name,
            message_id=message_id_of(email.message),
            raw={"path": str(request.path), "bytes": len(request.data)},
        )

    def _write_atomically(self, path: Path, data: bytes) -> None:
        # A hidden name that does not end in .eml: readers globbing *.eml skip it.
        fd, temp_name = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                # Without fsync a crash after the rename could leave an empty file
                # under the final name on some file systems.
                os.fsync(file.fileno())
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
