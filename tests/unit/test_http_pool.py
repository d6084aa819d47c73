"""The keep-alive pool under the SendGrid transport: stale-connection checks
that work for any file descriptor, the request it writes (byte for byte what
``http.client`` would), and how it reads every shape of answer HTTP/1.1 allows.
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from nurture.testing import FakeSendGrid
from nurture.transports import http_pool, http_wire
from nurture.transports.sendgrid import SendGridTransport
from tests.transport_kit import make_email

API_KEY = "SG.pool-test.key"
FD_SETSIZE = 1024  # select.select refuses descriptors from here on
WANTED_LIMIT = FD_SETSIZE + 200


@pytest.fixture
def fds_above_1024() -> Iterator[None]:
    """Every descriptor up to 1024 in use, so the next socket's number is above it.

    Raises the soft RLIMIT_NOFILE for the test if it has to (and can).
    """
    resource = pytest.importorskip("resource", reason="RLIMIT_NOFILE needs a Unix")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raise_limit = soft != resource.RLIM_INFINITY and soft < WANTED_LIMIT
    if raise_limit:
        if hard != resource.RLIM_INFINITY and hard < WANTED_LIMIT:
            pytest.skip(
                f"the hard RLIMIT_NOFILE is {hard}: this process cannot open a "
                f"descriptor numbered above {FD_SETSIZE}"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (WANTED_LIMIT, hard))
    held: list[int] = []
    try:
        # New descriptors take the lowest free number: once one is numbered
        # 1024, every lower one is taken.
        while not held or held[-1] < FD_SETSIZE:
            held.append(os.open(os.devnull, os.O_RDONLY))
        with socket.socket() as probe:
            assert probe.fileno() > FD_SETSIZE
        yield
    finally:
        for fd in held:
            os.close(fd)
        if raise_limit:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("fds_above_1024")
def test_connections_above_fd_1024_are_kept_alive() -> None:
    """select.select() fails for such a descriptor; the pool then took every idle
    connection for closed and opened a new one per request."""
    with FakeSendGrid(api_key=API_KEY) as fake:
        transport = SendGridTransport(API_KEY, host=fake.url, timeout=2.0)
        for index in range(3):
            transport.send(make_email(send_id=f"s{index}"))
        transport.close()
        assert fake.stats() == {"received": 3, "delivered": 3, "connections": 1}


@pytest.mark.usefixtures("fds_above_1024")
def test_a_connection_above_fd_1024_the_server_closed_is_replaced() -> None:
    with FakeSendGrid(api_key=API_KEY) as first:
        url = first.url
        transport = SendGridTransport(API_KEY, host=url, timeout=2.0)
        transport.send(make_email(send_id="a"))
    port = int(url.rsplit(":", 1)[1])
    with FakeSendGrid(api_key=API_KEY, port=port) as second:
        transport.send(make_email(send_id="b"))  # not an AmbiguousSendError on the dead one
        assert len(second.delivered) == 1
    transport.close()


# -- the request


class RecordingSocket:
    """Stands in for a connected socket: keeps each write http.client makes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


HEADERS = {"Authorization": "Bearer SG.x", "Content-Type": "application/json"}


def standard_request(host: str, port: int | None, path: str, body: bytes) -> bytes:
    """What http.client writes for the same POST."""
    connection = http.client.HTTPConnection(host, port)
    recorder = RecordingSocket()
    connection.sock = recorder  # type: ignore[assignment]  # "connected": request() writes here
    connection.request("POST", path, body=body, headers=HEADERS)
    return b"".join(recorder.writes)


@pytest.mark.parametrize(
    ("host", "port"),
    [("api.example.com", None), ("127.0.0.1", 8123), ("::1", 8123), ("bücher.example", None)],
)
def test_the_request_is_what_http_client_writes(host: str, port: int | None) -> None:
    body = '{"subject": "Hej då"}'.encode()
    before, after = http_wire.request_head(
        "/v3/mail/send", http_wire.host_header(host, port or 80, 80), tuple(HEADERS.items())
    )
    ours = before + b"%d" % len(body) + after + body
    assert ours == standard_request(host, port, "/v3/mail/send", body)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\r\nBcc: someone@example.com"},
        {"X-Evil": "a\nb"},
        {"Bad Name": "x"},
        {"X-Colon:": "x"},
        {"Content-Length": "5"},
    ],
)
def test_a_header_that_would_break_the_request_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="Invalid header"):
        http_wire.request_head("/v3/mail/send", "api.example.com", tuple(headers.items()))


def test_a_path_with_spaces_is_refused() -> None:
    with pytest.raises(http.client.InvalidURL):
        http_wire.request_head("/v3/mail send HTTP/1.0\r\nX: y", "h", ())


# -- the answer -------------------------------------------------------------------


def answer(*chunks: bytes, close: bool = True) -> tuple[http_wire.Reply, bool, bytes]:
    """Read one answer from a socket the "server" writes ``chunks`` to (a
    write each, 5 ms apart, so the client reads them apart), then closes if
    ``close``: the reply, whether the connection is reusable, and what the
    client had sent."""
    ours, theirs = socket.socketpair()
    ours.settimeout(2.0)

    def serve() -> None:
        for chunk in chunks:
            theirs.sendall(chunk)
            time.sleep(0.005)
        if close:
            theirs.shutdown(socket.SHUT_WR)

    server = threading.Thread(target=serve)
    server.start()
    try:
        ours.sendall(b"POST / HTTP/1.1\r\n\r\n")
        reply, reusable = http_wire.WireConnection(ours).read_reply()
        theirs.settimeout(2.0)
        return reply, reusable, theirs.recv(100)
    finally:
        server.join()
        ours.close()
        theirs.close()


def test_a_plain_answer_with_a_length() -> None:
    reply, reusable, sent = answer(
        b"HTTP/1.1 202 Accepted\r\nX-Message-Id: abc\r\nContent-Length: 0\r\n\r\n", close=False
    )
    assert (reply.status, reply.headers["x-message-id"], reply.body) == (202, "abc", b"")
    assert reusable
    assert sent == b"POST / HTTP/1.1\r\n\r\n"


def test_an_answer_split_across_reads_and_bare_line_feeds() -> None:
    reply, reusable, _ = answer(
        b"HTTP/1.1 400 Bad Req", b"uest\nContent-Type: application/json\n", b"Content-Le",
        b"ngth: 13\n\n{\"errors\"", b":[]}", close=False,
    )  # fmt: skip
    assert (reply.status, reply.body, reusable) == (400, b'{"errors":[]}', True)


def test_a_chunked_answer_with_extensions_and_trailers() -> None:
    reply, reusable, _ = answer(
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n"
        b"X-RateLimit-Reset: 1700000000\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        close=False,
    )
    assert (reply.status, reply.body, reusable) == (429, b"hello world", True)
    assert reply.headers["x-ratelimit-reset"] == "1700000000"


def test_interim_answers_are_skipped() -> None:
    reply, _, _ = answer(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok"
    )
    assert (reply.status, reply.body) == (202, b"ok")


@pytest.mark.parametrize(
    ("head", "reusable"),
    [
        (b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0", False),
        (b"HTTP/1.1 202 Accepted\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0", False),
        (b"HTTP/1.0 202 Accepted\r\nContent-Length: 0", False),
        (b"HTTP/1.0 202 Accepted\r\nConnection: keep-alive\r\nContent-Length: 0", True),
        (b"HTTP/1.1 204 No Content", True),
        (b"HTTP/1.1 202 Accepted\r\nContent-Length: 3, 3", True),
    ],
)
def test_whether_the_connection_carries_another_request(head: bytes, reusable: bool) -> None:
    body = b"abc" if b"3, 3" in head else b""
    assert answer(head + b"\r\n\r\n" + body, close=False)[1] is reusable


def test_an_answer_without_a_length_runs_to_the_close() -> None:
    reply, reusable, _ = answer(b"HTTP/1.1 500 Oops\r\n\r\n", b"internal ", b"error")
    assert (reply.status, reply.body, reusable) == (500, b"internal error", False)


def test_bytes_after_the_answer_make_the_connection_unusable() -> None:
    reply, reusable, _ = answer(
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n", close=False
    )
    assert reply.status == 202
    assert not reusable


@pytest.mark.parametrize(
    ("chunks", "error"),
    [
        ((), http.client.RemoteDisconnected),
        ((b"HTTP/1.1 202 Acc",), http.client.IncompleteRead),
        (
            (b"HTTP/1.1 202 Accepted\r\nContent-Length: 10\r\n\r\nshort",),
            http.client.IncompleteRead,
        ),
        (
            (b"HTTP/1.1 202 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",),
            http.client.IncompleteRead,
        ),
        ((b"SMTP ready\r\n\r\n",), http.client.BadStatusLine),
        ((b"HTTP/1.1 2020 Accepted\r\n\r\n",), http.client.BadStatusLine),
        ((b"HTTP/1.1 202 Accepted\r\nContent-Length: ten\r\n\r\n",), http.client.HTTPException),
        ((b"HTTP/1.1 202 OK\r\nContent-Length: 3, 4\r\n\r\nabcd",), http.client.HTTPException),
        ((b"HTTP/1.1 202 OK\r\nTransfer-Encoding: gzip\r\n\r\n",), http.client.HTTPException),
        (
            (b"HTTP/1.1 202 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",),
            http.client.HTTPException,
        ),
        (
            (b"HTTP/1.1 202 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n",),
            http.client.HTTPException,
        ),
        ((b"HTTP/1.1 202 OK\r\nNo colon here\r\n\r\n",), http.client.HTTPException),
        ((b"HTTP/1.1 202 OK\r\nX-Long: " + b"a" * 70_000,), http.client.LineTooLong),
    ],
)
def test_an_answer_that_is_not_http_fails_as_http_client_does(
    chunks: tuple[bytes, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        answer(*chunks)


def test_an_answer_that_never_comes_times_out() -> None:
    with pytest.raises(TimeoutError):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.settimeout(0.2)
            http_wire.WireConnection(ours).read_reply()


def test_an_answer_too_large_is_refused() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (http_wire.MAX_BODY + 1)
    with pytest.raises(http.client.HTTPException, match="too large"):
        answer(head)


def test_a_chunked_answer_over_the_cap_is_refused_before_its_last_chunk_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_wire, "MAX_BODY", 10)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    # The second chunk's size passes the cap; its bytes never come.
    with pytest.raises(http.client.HTTPException, match="too large"):
        answer(head + b"6\r\nabcdef\r\n6\r\n")


# -- the pool's thread ------------------------------------------------------------


def slow_reader(sock: socket.socket, got: list[bytes]) -> None:
    """Serve one request on ``sock`` reading it 16 KB at a time with pauses
    (so the client's writes fill the socket and wait), then answer 202."""
    conn, _ = sock.accept()
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(16384)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += conn.recv(16384)
            time.sleep(0.0005)
        got.append(body)
        conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
        conn.recv(1)  # until the client closes


def test_a_request_larger_than_the_socket_takes_is_written_as_it_drains() -> None:
    body = os.urandom(6 * 1024 * 1024).hex().encode()[: 6 * 1024 * 1024]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        got: list[bytes] = []
        server = threading.Thread(target=slow_reader, args=(listener, got))
        server.start()
        pool = http_pool.KeepAlivePool(
            f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=20.0, size=1
        )
        reply = pool.post("/v3/mail/send", body, {"Content-Type": "application/json"})
        pool.close()
        server.join(10)
    assert reply.status == 202
    assert got == [body]


def test_the_pools_thread_ends_once_closed_and_its_connections_with_it() -> None:
    with FakeSendGrid(api_key=API_KEY) as fake:
        transport = SendGridTransport(API_KEY, host=fake.url, timeout=2.0)
        before = set(threading.enumerate())
        transport.send(make_email(send_id="a"))
        [thread] = [
            t for t in threading.enumerate() if t not in before and t.name == "nurture-http"
        ]
        transport.close()
        thread.join(2.0)
        assert not thread.is_alive()
        # The next send (a transport closed mid-pass refuses it, the pool
        # does not) starts a new thread, on a new connection.
        pool = transport._pool
        assert pool is not None
        pool.post(transport._path, b"{}", transport._headers)
        assert fake.stats()["connections"] == 2


def test_an_idle_connection_past_its_keepalive_is_replaced() -> None:
    with FakeSendGrid(api_key=API_KEY) as fake:
        pool = http_pool.KeepAlivePool(fake.url, timeout=2.0, size=4, keepalive=0.2)
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        pool.post("/v3/mail/send", b"{}", headers)
        pool.post("/v3/mail/send", b"{}", headers)
        assert fake.stats()["connections"] == 1
        time.sleep(0.4)
        pool.post("/v3/mail/send", b"{}", headers)
        pool.close()
        assert fake.stats() == {"received": 3, "delivered": 0, "connections": 2}


def test_a_bug_in_the_pools_thread_fails_what_is_in_flight_and_the_next_request_goes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Never an answer that waits forever: the request in hand gets the error,
    and the pool starts a new thread for the next one."""
    read = http_pool._Loop._read
    broken = [True]

    def read_once_broken(self: http_pool._Loop, link: http_pool._Link, closed: bool) -> None:
        if broken.pop() if broken else False:
            raise RuntimeError("a bug in the loop")
        read(self, link, closed)

    monkeypatch.setattr(http_pool._Loop, "_read", read_once_broken)
    with FakeSendGrid(api_key=API_KEY) as fake:
        pool = http_pool.KeepAlivePool(fake.url, timeout=2.0, size=4)
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        with pytest.raises(RuntimeError, match="a bug in the loop"):
            pool.post("/v3/mail/send", b"{}", headers)
        assert pool.post("/v3/mail/send", b"{}", headers).status == 400  # "{}" is no mail send
        pool.close()
