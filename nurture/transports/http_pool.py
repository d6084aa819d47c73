"""A small keep-alive HTTP/1.1 client for one origin, driven by one thread.

The official SendGrid client opens a new connection (and over HTTPS a new TLS
handshake) for every request; this pool keeps connections open across
requests, and one thread (:class:`KeepAlivePool`'s loop) writes every request
and reads every answer. It raises the same exception types as urllib, so one
translation of errors serves both paths (see ``nurture.transports.sendgrid``).

**Why not http.client.** The pool first sent through ``http.client`` (the
module under urllib). A request there costs about 340 µs of CPU on this
project's benchmark machine: seven ``putheader`` calls that check every name
and value again, and an answer parsed by the ``email`` package. The pool sends
one kind of request (a POST of a JSON body with the same headers each time), so
it writes it from a header block built and checked once, and
:class:`WireConnection` reads the answer by hand (status line, header lines,
``Content-Length`` or chunked body, or up to the close): 50-70 µs. It fails as
``http.client`` does (``RemoteDisconnected``, ``BadStatusLine``,
``IncompleteRead``, ``TimeoutError``), and anything it cannot read is an
``http.client.HTTPException``, never a guess.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import re
import selectors
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("nurture.transports.http_pool")


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, whichever client got it. Header names are lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def lower_keys(items: Any) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in items}


class KeepAlivePool:
    """Up to ``size`` HTTP/1.1 keep-alive connections to one origin, driven by one thread.

    Errors while connecting and sending are wrapped in ``URLError`` exactly as
    urllib does (``AbstractHTTPHandler.do_open``); errors while reading the
    answer are ``http.client``'s and ``OSError``'s (``TimeoutError`` when no
    answer came within ``timeout`` seconds of the request going out). One
    translation then serves both the pool and the official client.

    **One thread for every request in flight.** :meth:`submit` hands a request
    over and returns; the pool's thread writes it on a free connection, waits
    for every connection's answer at once (``selectors``: epoll on Linux, no
    limit on descriptor numbers) and calls the request's ``done`` with the
    :class:`Reply` or the exception. :meth:`post` is the same, waited for.
    With a blocking thread per request (as before), each of 128 threads woke
    and took the interpreter lock several times per request: about 400 µs of
    CPU per email at 1,200 emails/s, against 180 µs through one thread.

    New connections (DNS, TCP, the TLS handshake, an HTTPS proxy's tunnel) are
    opened by a few helper threads, blocking, with ``timeout``: a slow connect
    never holds up the answers of the others. Idle connections are watched as
    well: one the server closes (or writes to) is dropped at once, so a request
    is never written on a connection already closed; the newest idle one is
    reused first, and one idle for ``keepalive`` seconds is closed by us.
    """

    def __init__(
        self, url: str, *, timeout: float, size: int, keepalive: float = 5.0, connectors: int = 8
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._timeout = timeout
        self._size = size
        # Below any server's idle timeout: an idle connection is dropped by us
        # rather than closed by the server just as a request goes out on it.
        self._keepalive = keepalive
        self._connectors = max(1, min(connectors, size))
        self._context = ssl.create_default_context() if self._https else None
        self._proxy = https_proxy(self._host) if self._https else None
        self._host_header = host_header(self._host, self._port, 443 if self._https else 80)
        self._heads: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[bytes, bytes]] = {}
        self._lock = threading.Lock()
        self._incoming: deque[_Request | _Opened] = deque()  # for the pool's thread
        self._loop: _Loop | None = None
        self.closed = False

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """Send and wait for the answer (or raise what :meth:`submit` would hand ``done``)."""
        outcome: list[Reply | Exception] = []
        answered = threading.Event()

        def done(result: Reply | Exception) -> None:
            outcome.append(result)
            answered.set()

        self.submit(path, body, headers, done)
        answered.wait()
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def submit(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        done: Callable[[Reply | Exception], None],
    ) -> None:
        """Send without waiting: ``done`` is called once, from the pool's thread,
        with the answer or the exception. Raises (and never calls ``done``)
        only for a request that cannot be written (a header with CR or LF)."""
        before, after = self._head(path, headers)
        request = _Request(b"%s%d%s%s" % (before, len(body), after, body), done)
        self._hand_over(request)

    def close(self) -> None:
        """Close the idle connections, and each busy one once its answer is in;
        the pool's thread ends when nothing is left in flight."""
        with self._lock:
            self.closed = True
            loop = self._loop
        if loop is not None:
            loop.wake()

    def _hand_over(self, item: _Request | _Opened) -> None:
        with self._lock:
            self._incoming.append(item)
            loop = self._loop
            if loop is None or not loop.running:
                loop = self._loop = _Loop(self)
                loop.start()
        loop.wake()

    def _take_incoming(self, loop: _Loop) -> tuple[list[_Request | _Opened], bool] | None:
        """What was handed over since the last call, and whether the pool is
        closed; None (and the loop is let go) if the loop may end: nothing in
        flight or new, and no connection open (or the pool closed). The next
        request starts another."""
        with self._lock:
            loop.woken = False
            items = list(self._incoming)
            self._incoming.clear()
            if not items and loop.finished() and (self.closed or not loop.connected()):
                loop.running = False
                if self._loop is loop:
                    self._loop = None
                return None
            return items, self.closed

    def _head(self, path: str, headers: Mapping[str, str]) -> tuple[bytes, bytes]:
        """The request's header block (:func:`request_head`), built and checked once."""
        key = (path, tuple(headers.items()))
        head = self._heads.get(key)
        if head is None:
            head = request_head(path, self._host_header, key[1])
            if len(self._heads) < 16:  # one transport sends one set of headers
                self._heads[key] = head
        return head

    def _open(self, loop: _Loop) -> None:
        """In a helper thread: open a connection for ``loop`` and hand it (or
        the error: a URLError, or a bug as it is) over."""
        try:
            opened = _Opened(loop, self._connect(), None)
        except Exception as exc:
            opened = _Opened(loop, None, exc)
        self._hand_over(opened)

    def _connect(self) -> socket.socket:
        """A new connection (through the HTTPS proxy, if any); failures as URLError."""
        try:
            if self._proxy is None:
                sock = socket.create_connection((self._host, self._port), self._timeout)
            else:
                proxy_host, proxy_port, proxy_headers = self._proxy
                sock = socket.create_connection((proxy_host, proxy_port), self._timeout)
                try:
                    open_tunnel(sock, self._host, self._port, proxy_headers)
                except BaseException:
                    sock.close()
                    raise
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._context is not None:
                    sock = self._context.wrap_socket(sock, server_hostname=self._host)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
        except (OSError, http.client.HTTPException) as exc:
            # http.client raised these from request() too, wrapped by urllib.
            raise urllib.error.URLError(exc) from exc
        return sock


@dataclass(eq=False)
class _Request:
    data: bytes
    done: Callable[[Reply | Exception], None]
    deadline: float = 0.0
    """While waiting for a connection: when to give up (busy); while on one:
    when the write or the answer is overdue."""


@dataclass(eq=False)
class _Opened:
    """A helper thread's connection, or why it could not open one."""

    loop: _Loop
    """The loop that asked for it (another one if that loop failed meanwhile)."""
    sock: socket.socket | None
    error: Exception | None


@dataclass(eq=False)
class _Link:
    """One connection as the pool's thread sees it: idle (no request), writing
    (``unsent`` left), or reading the answer (``received`` so far)."""

    sock: socket.socket
    request: _Request | None = None
    unsent: memoryview | None = None
    received: list[bytes] = field(default_factory=list)
    idle_since: float = 0.0
    events: int = 0


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


class _Loop(threading.Thread):
    """The pool's thread: every connection, every request in flight."""

    def __init__(self, pool: KeepAlivePool) -> None:
        super().__init__(name="nurture-http", daemon=True)
        self.pool = pool
        self.running = True
        self.woken = False
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._selector.register(self._wake_in, selectors.EVENT_READ, None)
        self._links: set[_Link] = set()
        self._idle: list[_Link] = []  # the newest last
        self._waiting: deque[_Request] = deque()  # for a connection
        self._opening = 0
        self._helpers: ThreadPoolExecutor | None = None

    def wake(self) -> None:
        """Have the loop look at what was handed over (from any thread)."""
        if self.woken:
            return
        self.woken = True
        # Full: it wakes anyway. Closed: the loop has ended.
        with contextlib.suppress(OSError):
            self._wake_out.send(b"\0")

    def connected(self) -> bool:
        return bool(self._links)

    def finished(self) -> bool:
        """Nothing in flight, waiting or being opened (asked with the pool's lock held)."""
        return (
            not self._waiting
            and not self._opening
            and all(link.request is None for link in self._links)
        )

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # a bug here: fail what is in flight, never hang it
            log.exception("the HTTP connection pool's thread stopped")
            with self.pool._lock:  # the next request starts a new loop
                self.running = False
                if self.pool._loop is self:
                    self.pool._loop = None
                stranded = list(self.pool._incoming)
                self.pool._incoming.clear()
            for item in stranded:
                if isinstance(item, _Request):
                    self._waiting.append(item)
                elif item.sock is not None:
                    item.sock.close()
            self._fail_everything(exc if isinstance(exc, Exception) else RuntimeError(exc))
        finally:
            for link in list(self._links):
                self._drop(link)
            self._selector.close()
            self._wake_in.close()
            self._wake_out.close()
            if self._helpers is not None:
                self._helpers.shutdown(wait=False)

    def _run(self) -> None:
        while True:
            taken = self.pool._take_incoming(self)
            if taken is None:
                return
            items, closed = taken
            now = time.monotonic()
            for item in items:
                if isinstance(item, _Request):
                    item.deadline = now + self.pool._timeout
                    self._waiting.append(item)
                else:
                    self._opened(item, now)
            self._assign(now, closed)
            if closed:  # what no request took is closed
                while self._idle:
                    self._drop(self._idle.pop())
            for key, mask in self._selector.select(self._wait(now)):
                if key.data is None:
                    self._drain_wake()
                else:
                    self._ready(key.data, mask, closed)
            self._expire(time.monotonic())

    # -- connections and requests

    def _assign(self, now: float, closed: bool) -> None:
        """Put waiting requests on idle connections; open connections for the rest."""
        while self._waiting and self._idle:
            link = self._idle.pop()
            if now - link.idle_since >= self.pool._keepalive:
                self._drop(link)
                continue
            self._start(link, self._waiting.popleft(), now, closed)
        wanted = min(len(self._waiting), self.pool._size - len(self._links)) - self._opening
        for _ in range(max(wanted, 0)):
            if self._helpers is None:
                self._helpers = ThreadPoolExecutor(
                    self.pool._connectors, thread_name_prefix="nurture-http-connect"
                )
            self._opening += 1
            self._helpers.submit(self.pool._open, self)

    def _opened(self, opened: _Opened, now: float) -> None:
        ours = opened.loop is self
        if ours:
            self._opening -= 1
        if opened.sock is None:
            # Opened for the oldest waiting request: it fails, as it did
            # when each request opened its own connection.
            if ours and self._waiting:
                assert opened.error is not None
                self._finish(self._waiting.popleft(), opened.error)
            return
        link = _Link(opened.sock, idle_since=now)
        self._links.add(link)
        self._watch(link, selectors.EVENT_READ)
        self._idle.append(link)

    def _start(self, link: _Link, request: _Request, now: float, closed: bool) -> None:
        link.request = request
        link.unsent = memoryview(request.data)
        link.received = []
        request.deadline = now + self.pool._timeout
        self._write(link, closed)

    def _write(self, link: _Link, closed: bool) -> None:
        assert link.request is not None and link.unsent is not None
        try:
            while link.unsent:
                sent = link.sock.send(link.unsent)
                link.unsent = link.unsent[sent:]
        except (BlockingIOError, ssl.SSLWantWriteError):
            self._watch(link, selectors.EVENT_WRITE)
            return
        except ssl.SSLWantReadError:
            self._watch(link, selectors.EVENT_READ)
            return
        except OSError as exc:  # sending: nothing was accepted
            self._fail(link, urllib.error.URLError(exc))
            return
        # From here on SendGrid has the whole request. A failure now is
        # ambiguous, even on a reused connection: RFC 9112 §9.3.1 forbids
        # retrying a POST automatically.
        link.unsent = None
        link.request.deadline = time.monotonic() + self.pool._timeout
        self._watch(link, selectors.EVENT_READ)

    def _ready(self, link: _Link, mask: int, closed: bool) -> None:
        if link not in self._links:
            return  # dropped earlier in this round
        if link.request is None:
            # Idle and readable: the server closed it (or sent what no request
            # asked for). Never write a request on it.
            if isinstance(link.sock, ssl.SSLSocket):
                try:
                    link.sock.recv(1)
                except ssl.SSLWantReadError:
                    return  # a TLS record without data (a TLS 1.3 session ticket)
                except OSError:
                    pass
            self._idle.remove(link)
            self._drop(link)
        elif link.unsent is not None:
            self._write(link, closed)
        else:
            self._read(link, closed)

    def _read(self, link: _Link, closed: bool) -> None:
        assert link.request is not None
        try:
            while True:
                chunk = link.sock.recv(65536)
                link.received.append(chunk)
                if not chunk or not isinstance(link.sock, ssl.SSLSocket):
                    break
                if not link.sock.pending():
                    break  # TLS: what was decrypted is all read
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as exc:
            self._fail(link, exc)
            return
        try:
            answer = read_arrived(link.received)
        except (http.client.HTTPException, OSError) as exc:
            self._fail(link, exc)
            return
        if answer is None:
            if link.received and not link.received[-1]:  # closed: cannot happen, but never spin
                self._fail(link, http.client.RemoteDisconnected("closed mid-answer"))
            return
        reply, reusable = answer
        request, link.request, link.received = link.request, None, []
        if reusable and not closed:
            link.idle_since = time.monotonic()
            self._idle.append(link)
        else:
            self._drop(link)
        self._finish(request, reply)

    def _expire(self, now: float) -> None:
        """Fail what is overdue; close connections idle for too long."""
        while self._waiting and self._waiting[0].deadline <= now:
            request = self._waiting.popleft()
            self._finish(request, urllib.error.URLError("every pooled connection stayed busy"))
        for link in [link for link in self._links if link.request is not None]:
            assert link.request is not None
            if link.request.deadline <= now:
                if link.unsent is not None:  # not all written: nothing was accepted
                    self._fail(link, urllib.error.URLError(TimeoutError("timed out")))
                else:
                    self._fail(link, TimeoutError("timed out"))
        keep = now - self.pool._keepalive
        while self._idle and self._idle[0].idle_since <= keep:
            self._drop(self._idle.pop(0))

    def _wait(self, now: float) -> float:
        """How long select may wait: until the next deadline or idle expiry."""
        times = [self._waiting[0].deadline] if self._waiting else []
        times += [link.request.deadline for link in self._links if link.request is not None]
        if self._idle:
            times.append(self._idle[0].idle_since + self.pool._keepalive)
        return max(min(times, default=now + 60.0) - now, 0.0)

    def _fail(self, link: _Link, error: Exception) -> None:
        request, link.request = link.request, None
        self._drop(link)
        if request is not None:
            self._finish(request, error)

    def _finish(self, request: _Request, outcome: Reply | Exception) -> None:
        try:
            request.done(outcome)
        except Exception:  # the caller's bug: theirs to fix, not the other requests' problem
            log.exception("a request's completion failed")

    def _fail_everything(self, error: Exception) -> None:
        for link in list(self._links):
            if link.request is not None:
                self._fail(link, error)
        while self._waiting:
            self._finish(self._waiting.popleft(), error)

    def _watch(self, link: _Link, events: int) -> None:
        if link.events == events:
            return
        if link.events:
            self._selector.modify(link.sock, events, link)
        else:
            self._selector.register(link.sock, events, link)
        link.events = events

    def _drop(self, link: _Link) -> None:
        if link in self._links:
            self._links.discard(link)
            if link.events:
                self._selector.unregister(link.sock)
            link.sock.close()

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: all read
            while self._wake_in.recv(4096):
                pass


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


# -- the transport -------------------------------------------------------------


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
