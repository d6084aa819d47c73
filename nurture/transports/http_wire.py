"""HTTP/1.1 on the wire, as much of it as the SendGrid pool speaks: the request
written, the answer read, the proxy's tunnel asked for.

**Why not http.client.** The pool first sent through ``http.client`` (the
module under urllib). A request there costs about 340 µs of CPU on this
project's benchmark machine: seven ``putheader`` calls that check every name
and value again, and an answer parsed by the ``email`` package. The pool sends
one kind of request (a POST of a JSON body with the same headers each time), so
it writes it from a header block built and checked once (:func:`request_head`),
and :class:`WireConnection` reads the answer by hand (status line, header
lines, ``Content-Length`` or chunked body, or up to the close): 50-70 µs. It
fails as ``http.client`` does (``RemoteDisconnected``, ``BadStatusLine``,
``IncompleteRead``, ``TimeoutError``), and anything it cannot read is an
``http.client.HTTPException``, never a guess.
"""

from __future__ import annotations

import base64
import http.client
import re
import socket
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, whichever client got it. Header names are lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def lower_keys(items: Any) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in items}


# -- the request -----------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")
_BAD_PATH = re.compile(r"[\x00-\x20\x7f]")


def host_header(host: str, port: int, default_port: int) -> str:
    """The Host header's value for ``host``:``port``, as ``http.client`` writes it."""
    try:
        name = host.encode("ascii").decode("ascii")
    except UnicodeEncodeError:
        name = host.encode("idna").decode("ascii")
    if ":" in name:  # an IPv6 address
        name = f"[{name}]"
    return name if port == default_port else f"{name}:{port}"


def request_head(path: str, host: str, headers: tuple[tuple[str, str], ...]) -> tuple[bytes, bytes]:
    """A POST's header block in ``http.client``'s order (the request line,
    Host, Accept-Encoding, Content-Length, then ``headers``), split where the
    body's length goes: ``before + b"%d" % len(body) + after + body`` is the request.

    Raises ValueError for a header that would break the request (a CR or LF in
    a value: header injection), as ``http.client`` does, and
    ``http.client.InvalidURL`` for a path with spaces or control characters.
    """
    if _BAD_PATH.search(path):
        raise http.client.InvalidURL(f"URL can't contain control characters. {path!r}")
    lines = [""]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or name.lower() in ("host", "content-length"):
            raise ValueError(f"Invalid header name {name!r}")
        if _BAD_VALUE.search(value):
            raise ValueError(f"Invalid header value for {name!r}")
        lines.append(f"{name}: {value}")
    before = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\nContent-Length: "
    )
    return before.encode("ascii"), ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def https_proxy(host: str) -> tuple[str, int, dict[str, str]] | None:
    """The HTTPS proxy urllib would use for ``host`` (``HTTPS_PROXY``, ``NO_PROXY``)."""
    proxy = urllib.request.getproxies().get("https")
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    headers = {}
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:"
        credentials += urllib.parse.unquote(parts.password or "")
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    return parts.hostname or "", parts.port or 8080, headers


# -- the answer --------------------------------------------------------------------

MAX_HEAD = 65536
"""The most bytes an answer's status line and headers may take (``http.client``'s line limit)."""
MAX_BODY = 16 * 1024 * 1024
"""The most bytes of an answer's body read: a v3 answer is a few hundred."""
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: [^\r\n]*)?")
_NO_BODY = frozenset({204, 304})
_FRAMING = frozenset({"connection", "transfer-encoding", "content-length"})


class Receiver(Protocol):
    """What :class:`WireConnection` reads from: a socket, or bytes already received."""

    def recv(self, bufsize: int, /) -> bytes: ...


class WireConnection:
    """Reads answers off one connection, speaking just what the pool needs of HTTP/1.1.

    :meth:`read_reply` reads one answer (skipping interim 1xx answers) and
    says whether the connection can carry another. A read that times out
    raises ``TimeoutError`` (the socket's timeout); the peer closing early,
    ``http.client.RemoteDisconnected`` or ``IncompleteRead``; an answer that is
    not HTTP, an ``HTTPException``.
    """

    __slots__ = ("_buffer", "sock")

    def __init__(self, sock: Receiver) -> None:
        self.sock = sock
        self._buffer = b""

    def buffered(self) -> bool:
        """True if bytes were read past the last answer (or head) returned."""
        return bool(self._buffer)

    def read_reply(self) -> tuple[Reply, bool]:
        """The next answer, and whether the connection can be used again."""
        while True:
            version, status, headers, fields = self.read_head()
            if status >= 200 or status == 101:
                break  # a 1xx other than 101 is interim: the answer follows
        connection = fields.get("connection", [])
        reusable = "close" not in connection and (version >= (1, 1) or "keep-alive" in connection)
        codings = fields.get("transfer-encoding")
        lengths = set(fields.get("content-length", []))
        if status in _NO_BODY or status < 200:
            body = b""
        elif codings:
            if codings != ["chunked"]:
                raise http.client.HTTPException(f"unsupported transfer coding {codings!r}")
            body = self._read_chunked()
        elif lengths:
            length = lengths.pop()
            if lengths or not length.isdigit():  # "42, 42" is one length; "42, 43" none
                raise http.client.HTTPException(f"bad Content-Length {headers['content-length']!r}")
            body = self._read_exactly(int(length))
        else:  # the body runs to the close (RFC 9112 §6.3)
            body = self._read_to_close()
            reusable = False
        if self._buffer:  # bytes no answer accounts for: never read them as the next one
            reusable = False
        return Reply(status, headers, body), reusable

    def read_head(self) -> tuple[tuple[int, int], int, dict[str, str], dict[str, list[str]]]:
        """The status line and header fields: the version, the status, the
        headers by lower-case name (the last of a repeated one), and the
        values of the fields that frame the body, as lists."""
        data = self._buffer
        searched = 0
        while True:
            end = _HEAD_END.search(data, max(searched - 3, 0))
            if end is not None:
                break
            if len(data) > MAX_HEAD:
                raise http.client.LineTooLong("header section")
            searched = len(data)
            chunk = self.sock.recv(65536)
            if not chunk:
                if not data:
                    raise http.client.RemoteDisconnected(
                        "Remote end closed connection without response"
                    )
                raise http.client.IncompleteRead(data)
            data += chunk
        self._buffer = data[end.end() :]
        lines = _LINE_END.split(data[: end.start()])
        status_line = _STATUS_LINE.fullmatch(lines[0])
        if status_line is None:
            raise http.client.BadStatusLine(lines[0].decode("latin-1"))
        version = (int(status_line[1]), int(status_line[2]))
        headers: dict[str, str] = {}
        fields: dict[str, list[str]] = {}
        name = ""
        for raw in lines[1:]:
            line = raw.decode("latin-1")
            if line[:1] in (" ", "\t") and name:  # obs-fold: the last field continues
                headers[name] = f"{headers[name]} {line.strip()}"
                continue
            field, colon, value = line.partition(":")
            name = field.lower()
            if not colon or not _TOKEN.fullmatch(field):
                raise http.client.HTTPException(f"malformed header line {line[:80]!r}")
            headers[name] = value.strip()
            if name in _FRAMING:
                values = fields.setdefault(name, [])
                values += [part.strip().lower() for part in value.split(",") if part.strip()]
        return version, int(status_line[3]), headers, fields

    def _fill(self, size: int) -> None:
        """Read until the buffer holds ``size`` bytes; IncompleteRead if the peer closes first."""
        while len(self._buffer) < size:
            chunk = self.sock.recv(max(65536, size - len(self._buffer)))
            if not chunk:
                raise http.client.IncompleteRead(self._buffer, size - len(self._buffer))
            self._buffer += chunk

    def _read_exactly(self, size: int) -> bytes:
        if size > MAX_BODY:
            raise http.client.HTTPException(f"an answer of {size} bytes is too large")
        self._fill(size)
        body, self._buffer = self._buffer[:size], self._buffer[size:]
        return body

    def _read_line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
                return line.rstrip(b"\r\n")
            if len(self._buffer) > MAX_HEAD:
                raise http.client.LineTooLong("chunk line")
            self._fill(len(self._buffer) + 1)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise http.client.HTTPException(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self._read_line():  # trailer fields, up to the empty line
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise http.client.HTTPException("the answer is too large")
            parts.append(self._read_exactly(size))
            if self._read_line():
                raise http.client.HTTPException("a chunk does not end where its size says")

    def _read_to_close(self) -> bytes:
        parts = [self._buffer]
        total = len(self._buffer)
        self._buffer = b""
        while chunk := self.sock.recv(65536):
            total += len(chunk)
            if total > MAX_BODY:
                raise http.client.HTTPException("the answer is too large")
            parts.append(chunk)
        return b"".join(parts)


def open_tunnel(sock: socket.socket, host: str, port: int, headers: Mapping[str, str]) -> None:
    """Ask the proxy at the other end of ``sock`` for a tunnel to ``host``:``port``
    (HTTP CONNECT); OSError when it refuses, as ``http.client`` raises."""
    target = host_header(host, port, 0)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    proxy = WireConnection(sock)
    _, status, _, _ = proxy.read_head()
    if status != 200:
        raise OSError(f"Tunnel connection failed: {status}")
    if proxy.buffered():  # the server's first bytes cannot come before our TLS hello
        raise http.client.HTTPException("the proxy sent data after its answer to CONNECT")


# -- an answer read as its bytes arrive -------------------------------------


class _Incomplete(Exception):
    """The answer read so far stops short: wait for more bytes."""


class _Arrived:
    """The bytes a connection received for one answer, handed to
    :class:`WireConnection`'s reader as if from the socket; past the last of
    them the reader is stopped (:class:`_Incomplete`) until more arrive."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks
        self.used = 0

    def recv(self, _size: int, /) -> bytes:
        if self.used == len(self._chunks):
            raise _Incomplete
        self.used += 1
        return self._chunks[self.used - 1]


def read_arrived(chunks: list[bytes]) -> tuple[Reply, bool] | None:
    """The answer in ``chunks`` (a ``b""`` chunk is the peer's close) and
    whether the connection can carry another; None if it is not all there
    yet. Raises what :meth:`WireConnection.read_reply` raises for a bad one."""
    source = _Arrived(chunks)
    try:
        reply, reusable = WireConnection(source).read_reply()
    except _Incomplete:
        return None
    # Bytes no answer accounts for (a chunk the reader never asked for): never
    # read them as the next answer.
    return reply, reusable and source.used == len(chunks)
