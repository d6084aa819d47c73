"""A rendered email and its MIME form: :class:`RenderedEmail`, ``to_message``, ``to_bytes``.

Also the header encoding ``to_bytes`` does itself: RFC 2047 encoded words,
addresses with IDNA domains, and quoted-printable bodies.

**No header carries a control character.** Subjects and display names come
from subscribers and templates: :func:`header_text` turns every control
character (CR and LF included) into a space before a value reaches a header,
whichever way the message is built, so no value can add a header or hide text.

**Internationalised addresses.** A Unicode domain (``anna@exämple.se``) is
written with IDNA A-labels (``xn--exmple-cua.se``), which every server takes.
A Unicode local part (``jörg@example.com``) has no ASCII form: it needs
SMTPUTF8 (RFC 6531/6532), so ``to_bytes`` refuses it with
:class:`AddressEncodingError` unless asked for ``utf8=True``, which writes such
addresses as UTF-8 (the rest of the message stays 7-bit).
"""

from __future__ import annotations

import binascii
import hashlib
import re
from base64 import b64encode
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import idna


class AddressEncodingError(ValueError):
    """An address that cannot go into a 7-bit header or envelope (see the module docstring)."""


# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators.
_HEADER_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class NotUnicode(ValueError):
    """Text with a lone surrogate (see :func:`unicode_problem`)."""


def unicode_problem(text: str) -> str | None:
    """Why ``text`` cannot go into an email, or None: a lone surrogate
    (``'\\ud800'`` in a template makes one), which no UTF-8 can carry.

    Runs on every email's parts: ``isascii`` is constant time, and a strict
    encode scans a 10 KB non-ASCII text in about 7 µs (a surrogate regex
    takes about 40).
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Strict UTF-8 refuses only surrogates: every other code point encodes.
        return (
            "the email has text that is not valid Unicode "
            f"(a lone surrogate U+{ord(text[exc.start]):04X})"
        )
    return None


def header_text(value: str) -> str:
    """``value`` fit for a header: control characters as spaces, white space collapsed."""
    return " ".join(_HEADER_CONTROLS.sub(" ", value).split())


def needs_smtputf8(address: str) -> bool:
    """Whether ``address`` has a non-ASCII local part (only SMTPUTF8 can carry it)."""
    return not address.rpartition("@")[0].isascii()


def ascii_address(address: str, *, utf8: bool = False) -> str:
    """``address`` with its domain in IDNA A-labels; the local part as it is.

    Raises :class:`AddressEncodingError` for a domain IDNA cannot encode, and,
    unless ``utf8``, for a non-ASCII local part.
    """
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise AddressEncodingError(f"{address!r} is not an email address")
    if not local.isascii() and not utf8:
        raise AddressEncodingError(
            f"the address {address!r} has a non-ASCII local part (before the @), "
            "which only SMTPUTF8 can carry"
        )
    if domain.isascii():
        return address
    try:
        # IDNA 2008 with the UTS 46 mapping, as email-validator checked it
        # (the standard library's codec is IDNA 2003: it maps "ß" to "ss").
        encoded = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise AddressEncodingError(
            f"the domain of {address!r} cannot be IDNA-encoded: {exc}"
        ) from exc
    return f"{local}@{encoded}"


@dataclass(frozen=True)
class RenderedEmail:
    """One rendered email. ``headers`` are the pipeline's own (List-*, X-Nurture-*)."""

    subject: str
    preheader: str
    html: str
    text: str
    headers: dict[str, str]

    def to_message(
        self,
        *,
        sender_name: str,
        sender_email: str,
        to_email: str,
        to_name: str = "",
        reply_to: str | None = None,
        message_id: str,
        date: datetime,
    ) -> EmailMessage:
        """A multipart/alternative message (text, then HTML), UTF-8.

        ``message_id`` comes from the caller (derive it from the ledger row, so
        a resend of the same step is recognisable); ``date`` must be aware.
        :class:`~email.headerregistry.Address` RFC 2047-encodes non-ASCII display
        names such as "Anna på Exempel AB". Costs milliseconds (the email
        package); :meth:`to_bytes` gives the same message in a few per cent of that.
        """
        _check_date(date)
        message = EmailMessage()
        message["Subject"] = header_text(self.subject)
        message["From"] = Address(display_name=header_text(sender_name), addr_spec=sender_email)
        message["To"] = Address(display_name=header_text(to_name), addr_spec=to_email)
        if reply_to:
            message["Reply-To"] = Address(addr_spec=reply_to)
        message["Date"] = format_datetime(date)
        message["Message-ID"] = _angle(message_id)
        for name, value in self.headers.items():
            message[name] = header_text(value)
        # Text first: RFC 2046 section 5.1.4 orders alternatives from the least
        # to the most faithful, and clients show the last one they can.
        message.set_content(self.text, charset="utf-8")
        message.add_alternative(self.html, subtype="html", charset="utf-8")
        return message

    def to_bytes(
        self,
        *,
        sender_name: str,
        sender_email: str,
        to_email: str,
        to_name: str = "",
        reply_to: str | None = None,
        message_id: str,
        date: datetime,
        utf8: bool = False,
    ) -> bytes:
        """The message of :meth:`to_message` as RFC 5322 bytes with CRLF line ends.

        Deterministic: the MIME boundary comes from the Message-ID and starts
        with ``=_``, which quoted-printable bodies can never contain. ASCII
        only, unless ``utf8``: then an address with a non-ASCII local part is
        written as UTF-8 (RFC 6532) instead of refused.
        """
        _check_date(date)
        headers = [
            ("Subject", _encode_text(self.subject)),
            ("From", _encode_address(sender_name, sender_email, utf8=utf8)),
            ("To", _encode_address(to_name, to_email, utf8=utf8)),
        ]
        if reply_to:
            headers.append(("Reply-To", _encode_address("", reply_to, utf8=utf8)))
        headers += [("Date", format_datetime(date)), ("Message-ID", _angle(message_id))]
        # Ours are ASCII already, with encoded words where needed (links.list_id).
        headers += [
            (name, header_text(value) if value.isascii() else _encode_text(value))
            for name, value in self.headers.items()
        ]
        boundary = "=_" + hashlib.sha256(message_id.encode()).hexdigest()[:24]
        headers += [
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ]
        out = [f"{name}: {value}\r\n" for name, value in headers]
        for subtype, body in (("plain", self.text), ("html", self.html)):
            out.append(
                f'\r\n--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
                f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{_quoted_printable(body)}"
            )
        out.append(f"\r\n--{boundary}--\r\n")
        return "".join(out).encode("utf-8" if utf8 else "ascii")


def _check_date(date: datetime) -> None:
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("date must be timezone-aware")


def _angle(message_id: str) -> str:
    return message_id if message_id.startswith("<") else f"<{message_id}>"


def _encode_text(value: str) -> str:
    """A header value: as is when short ASCII, else RFC 2047 encoded words.

    Control characters, newlines included, become spaces first
    (:func:`header_text`), so no value can inject a header.
    """
    value = header_text(value)
    if value.isascii() and len(value) <= 900 and "=?" not in value:  # RFC 5322 2.1.1
        return value
    data, words, start = value.encode(), [], 0
    while start < len(data):
        end = min(start + 45, len(data))  # 45 bytes: words under 75 characters (RFC 2047 2)
        while end < len(data) and data[end] & 0xC0 == 0x80:  # not inside a character
            end -= 1
        words.append(f"=?utf-8?b?{b64encode(data[start:end]).decode()}?=")
        start = end
    return "\r\n ".join(words)


_SPECIALS = frozenset('()<>@,;:\\".[]')
_NOT_IN_ADDRESS = re.compile(r"[\s<>]")


def _encode_address(name: str, address: str, *, utf8: bool = False) -> str:
    if _NOT_IN_ADDRESS.search(address) or _HEADER_CONTROLS.search(address):
        raise AddressEncodingError(f"cannot put address {address!r} in a header")
    address = ascii_address(address, utf8=utf8)
    name = header_text(name)
    if not name:
        return address
    if not name.isascii() or "=?" in name:  # "=?...?=" would be decoded as a word
        return f"{_encode_text(name)} <{address}>"
    if any(c in _SPECIALS for c in name):
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address}>'
    return f"{name} <{address}>"


def _quoted_printable(text: str) -> str:
    """``text`` ending in a line break, quoted-printable with CRLF line ends.

    binascii's encoder is C; with ``istext`` it keeps line breaks and soft-wraps
    at 76 characters (RFC 2045 6.7).
    """
    data = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n") + "\n"
    return binascii.b2a_qp(data.encode("utf-8"), istext=True).decode("ascii").replace("\n", "\r\n")
