"""A small keep-alive HTTP/1.1 connection pool on ``http.client``.

The official SendGrid client opens a new connection (and over HTTPS a new TLS
handshake) for every request; this pool keeps connections open across
requests and threads. It raises the same exception types as urllib, so one
translation of errors serves both paths (see ``nurture.transports.sendgrid``).
"""

from __future__ import annotations

import base64
import http.client
import inspect
import queue
import selectors
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, whichever client got it. Header names are lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def lower_keys(items: Any) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in items}


class KeepAlivePool:
    """Up to ``size`` HTTP/1.1 keep-alive connections to one origin, shared by threads.

    Built on ``http.client``, the module under the official client's urllib, so
    both paths fail with the same exception types; errors while connecting and
    sending are wrapped in ``URLError`` exactly as urllib does
    (``AbstractHTTPHandler.do_open``). One translation then serves both.

    No lock of ours on the hot path: idle connections live in a deque (atomic
    append/pop; the newest is reused first, so in a quiet period the rest
    expire) and the ``size`` bound is a queue of tokens. (With 128 threads,
    httpx's pool measured a fifth of this rate here, urllib3's about two thirds.)
    """

    def __init__(self, url: str, *, timeout: float, size: int, keepalive: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._timeout = timeout
        # Below any server's idle timeout: an idle connection is dropped by us
        # rather than closed by the server just as a request goes out on it.
        self._keepalive = keepalive
        self._context = ssl.create_default_context() if self._https else None
        self._proxy = https_proxy(self._host) if self._https else None
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(size):
            self._tokens.put(None)
        self._idle: deque[tuple[http.client.HTTPConnection, float]] = deque()
        self.closed = False

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        try:
            self._tokens.get(timeout=self._timeout)
        except queue.Empty:
            raise urllib.error.URLError("every pooled connection stayed busy") from None
        try:
            connection = self._checkout()
            try:
                try:
                    connection.request("POST", path, body=body, headers=headers)
                except OSError as exc:  # connecting or sending: nothing was accepted
                    raise urllib.error.URLError(exc) from exc
                # From here on SendGrid has the whole request. A failure now is
                # ambiguous, even on a reused connection: RFC 9112 §9.3.1 forbids
                # retrying a POST automatically. Stale connections are weeded out
                # before reuse (_checkout) to keep that rare.
                response = connection.getresponse()
                data = response.read()
            except BaseException:
                connection.close()
                raise
            if response.will_close:
                connection.close()
            else:
                self._checkin(connection)
            return Reply(response.status, lower_keys(response.getheaders()), data)
        finally:
            self._tokens.put(None)

    def _checkout(self) -> http.client.HTTPConnection:
        now = time.monotonic()
        while True:
            try:
                connection, since = self._idle.pop()
            except IndexError:
                return self._connect()
            if now - since < self._keepalive and not peer_closed(connection):
                return connection
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        if not self._https:
            return PooledHTTPConnection(self._host, self._port, timeout=self._timeout)
        if self._proxy is None:
            return PooledHTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._context
            )
        proxy_host, proxy_port, proxy_headers = self._proxy
        connection = PooledHTTPSConnection(
            proxy_host, proxy_port, timeout=self._timeout, context=self._context
        )
        connection.set_tunnel(self._host, self._port, headers=proxy_headers)
        return connection

    def _checkin(self, connection: http.client.HTTPConnection) -> None:
        self._idle.append((connection, time.monotonic()))
        if self.closed:  # close() ran meanwhile: do not leave this one open
            self._close_idle()

    def close(self) -> None:
        self.closed = True
        self._close_idle()

    def _close_idle(self) -> None:
        while True:
            try:
                connection, _ = self._idle.pop()
            except IndexError:
                return
            connection.close()


# -- one write per request -------------------------------------------------------
#
# http.client writes the header block and the body with two system calls. One
# write measured about 20% less CPU per email here (each write is a wake-up of
# the peer on loopback or a busy VM), so the pooled connections override
# HTTPConnection._send_output, using its _buffer of header lines. Both are
# private to http.client (unchanged since Python 3.6), so the override is only
# installed when single_write_fits() finds them as expected; otherwise the
# pool sends the standard way, and tests/unit/test_http_pool.py fails loudly
# (test_one_write_still_fits_this_interpreter) so the change is noticed.


def single_write_fits() -> bool:
    """True if this interpreter's ``http.client`` has the internals the override needs."""
    standard = getattr(http.client.HTTPConnection, "_send_output", None)
    if standard is None:
        return False
    try:
        parameters = list(inspect.signature(standard).parameters)
    except (TypeError, ValueError):
        return False
    if parameters != ["self", "message_body", "encode_chunked"]:
        return False
    # A dry run: queue a request line and a header without connecting.
    probe = http.client.HTTPConnection("probe.invalid")
    try:
        probe.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
        probe.putheader("X-Probe", "1")
    except Exception:  # any change in behaviour means "does not fit"
        return False
    buffer = getattr(probe, "_buffer", None)
    return isinstance(buffer, list) and buffer == [b"POST / HTTP/1.1", b"X-Probe: 1"]


SINGLE_WRITE = single_write_fits()
"""Whether pooled connections send each request's headers and body in one write."""

_standard_send_output = getattr(http.client.HTTPConnection, "_send_output", None)


def _send_output_in_one_write(
    self: http.client.HTTPConnection, message_body: Any = None, encode_chunked: bool = False
) -> None:
    """``HTTPConnection._send_output``, sending the header block and a bytes body in one write.

    Any other body goes the standard way.
    """
    buffer = getattr(self, "_buffer", None)
    if isinstance(message_body, bytes) and not encode_chunked and isinstance(buffer, list):
        buffer.extend((b"", b""))
        head = b"\r\n".join(buffer)
        del buffer[:]
        self.send(head + message_body)
    else:
        assert _standard_send_output is not None  # SINGLE_WRITE checked it
        _standard_send_output(self, message_body, encode_chunked)


class PooledHTTPConnection(http.client.HTTPConnection):
    """An ``HTTPConnection`` that sends a request in one write where it can."""

    if SINGLE_WRITE:
        _send_output = _send_output_in_one_write


class PooledHTTPSConnection(http.client.HTTPSConnection):
    """An ``HTTPSConnection`` that sends a request in one write where it can."""

    if SINGLE_WRITE:
        _send_output = _send_output_in_one_write


# selectors rather than select.select, which cannot watch a descriptor numbered
# 1024 or above (FD_SETSIZE): a process with many open files or sockets would
# find every idle connection "closed" and reconnect for each request. poll(2)
# has no such limit and needs no kernel object per check (epoll would).
_Selector: type[selectors.BaseSelector] = getattr(
    selectors, "PollSelector", selectors.DefaultSelector
)


def peer_closed(connection: http.client.HTTPConnection) -> bool:
    """True if an idle connection is readable: the server closed it (or sent junk)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        with _Selector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            return bool(selector.select(timeout=0))
    except (OSError, ValueError):
        return True


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
