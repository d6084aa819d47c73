"""The keep-alive pool under the SendGrid transport: stale-connection checks
that work for any file descriptor, and the one-write request it relies on
``http.client`` internals for.
"""

from __future__ import annotations

import http.client
import os
import socket
from collections.abc import Iterator

import pytest

from nurture.testing import FakeSendGrid
from nurture.transports import http_pool
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
def test_peer_closed_watches_a_descriptor_above_1024() -> None:
    ours, theirs = socket.socketpair()
    assert ours.fileno() > FD_SETSIZE
    connection = http.client.HTTPConnection("127.0.0.1")
    connection.sock = ours
    try:
        assert not http_pool.peer_closed(connection)  # open and quiet: reusable
        theirs.close()
        assert http_pool.peer_closed(connection)  # the peer hung up
    finally:
        ours.close()
        theirs.close()


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


# -- one write per request ------------------------------------------------------


class RecordingSocket:
    """Stands in for a connected socket: keeps each write http.client makes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def writes_of(connection_class: type[http.client.HTTPConnection]) -> list[bytes]:
    connection = connection_class("api.example.com")
    recorder = RecordingSocket()
    connection.sock = recorder  # type: ignore[assignment]  # "connected": request() writes here
    connection.request(
        "POST", "/v3/mail/send", body=b'{"a": 1}', headers={"Content-Type": "application/json"}
    )
    return recorder.writes


def test_one_write_still_fits_this_interpreter() -> None:
    """The pool overrides private parts of http.client; this fails when they change."""
    assert http_pool.SINGLE_WRITE, (
        "http.client's HTTPConnection._send_output or _buffer changed in this Python: "
        "pooled requests now go out in two writes (about 20% more CPU per email). "
        "Adapt _send_output_in_one_write in nurture/transports/http_pool.py, or drop it."
    )


def test_a_pooled_connection_sends_the_standard_bytes_in_one_write() -> None:
    standard = writes_of(http.client.HTTPConnection)
    pooled = writes_of(http_pool.PooledHTTPConnection)
    assert len(standard) == 2  # the header block, then the body
    assert pooled == [b"".join(standard)]
