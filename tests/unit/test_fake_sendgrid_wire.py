"""The fake SendGrid reads requests off the wire itself (not with ``email.parser``):
header names in any case, keep-alive and ``Connection: close`` as HTTP/1.0 and 1.1
mean them, ``Expect: 100-continue``, and malformed header sections answered 4xx
without counting a mail send."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from nurture.testing.fake_sendgrid import FakeSendGrid
from nurture.testing.fake_sendgrid_http import MAIL_SEND_PATH

BODY = json.dumps(
    {
        "personalizations": [{"to": [{"email": "bo@example.org"}]}],
        "from": {"email": "anna@example.com"},
        "subject": "Hej",
        "content": [{"type": "text/plain", "value": "Hej Bo"}],
    }
).encode()


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key="SG.key") as server:
        yield server


def connect(fake: FakeSendGrid) -> socket.socket:
    host, port = fake.url.removeprefix("http://").rstrip("/").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def mail_send(
    headers: str = "", *, version: str = "HTTP/1.1", key: str = "SG.key", body: bytes = BODY
) -> bytes:
    head = (
        f"POST {MAIL_SEND_PATH} {version}\r\nHost: fake\r\n"
        f"authorization: Bearer {key}\r\nCONTENT-TYPE: application/json\r\n"
        f"content-length: {len(body)}\r\n{headers}\r\n"
    )
    return head.encode() + body


def answer(sock: socket.socket) -> tuple[int, dict[str, str]]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response.status, {name.lower(): value for name, value in response.getheaders()}


def closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (an empty read within 2 s)."""
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_header_names_in_any_case_on_one_kept_alive_connection(fake: FakeSendGrid) -> None:
    with connect(fake) as sock:
        sock.sendall(mail_send())
        first, headers = answer(sock)
        sock.sendall(mail_send(key="SG.wrong"))
        second, _ = answer(sock)
        assert not closed(sock)
    assert (first, second) == (202, 401)
    assert headers["x-message-id"]
    assert fake.stats()["delivered"] == 1


@pytest.mark.parametrize(
    ("version", "connection", "kept"),
    [
        ("HTTP/1.1", "", True),
        ("HTTP/1.1", "Connection: Close\r\n", False),
        ("HTTP/1.0", "", False),
        ("HTTP/1.0", "Connection: keep-alive\r\n", True),
    ],
)
def test_the_connection_is_kept_as_the_request_asks(
    fake: FakeSendGrid, version: str, connection: str, kept: bool
) -> None:
    with connect(fake) as sock:
        sock.sendall(mail_send(connection, version=version))
        status, _ = answer(sock)
        assert status == 202
        assert closed(sock) is not kept


def test_expect_100_continue_is_answered_before_the_body(fake: FakeSendGrid) -> None:
    request = mail_send("Expect: 100-continue\r\n")
    head, body = request[: -len(BODY)], request[-len(BODY) :]
    with connect(fake) as sock:
        sock.sendall(head)
        interim = sock.recv(100)
        sock.sendall(body)
        status, _ = answer(sock)
    assert interim.startswith(b"HTTP/1.1 100")
    assert status == 202


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ("no colon here\r\n", 400),  # not a header line
        (" folded: continuation\r\n", 400),  # obsolete line folding
        ("".join(f"X-Many-{n}: {n}\r\n" for n in range(100)), 431),  # too many headers
        (f"X-Long: {'a' * 70_000}\r\n", 400),  # a line longer than 64 KiB
    ],
)
def test_a_malformed_header_section_is_refused_and_counts_nothing(
    fake: FakeSendGrid, extra: str, status: int
) -> None:
    with connect(fake) as sock:
        sock.sendall(mail_send(extra))
        got, _ = answer(sock)
    assert got == status
    assert fake.stats()["received"] == 0


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (f"POST {MAIL_SEND_PATH} HTTP/2.0", 505),
        (f"POST {MAIL_SEND_PATH} HTTP/1.x", 400),
        (f"POST {MAIL_SEND_PATH} HTTP/1.1 extra", 400),
    ],
)
def test_an_unusual_request_line_goes_to_the_standard_parser(
    fake: FakeSendGrid, request_line: str, status: int
) -> None:
    with connect(fake) as sock:
        sock.sendall(f"{request_line}\r\nHost: fake\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    # Its error page: without a status line, as the version was not understood.
    assert f"Error code: {status}" in received.decode()
    assert fake.stats()["received"] == 0


@pytest.mark.parametrize(
    "pieces",
    [
        # The header section in two writes: it is read line by line.
        lambda request: [request[:70], request[70:]],
        # Bare LF line ends: also line by line.
        lambda request: [request.replace(b"\r\n", b"\n", 3)],
        # A field repeated: its first value counts, as HTTPMessage.get.
        lambda request: [
            request.replace(b"SG.key\r\n", b"SG.key\r\nAuthorization: Bearer SG.wrong\r\n")
        ],
    ],
    ids=["split", "bare-lf", "repeated"],
)
def test_a_header_section_in_any_shape_a_client_may_send_is_read(
    fake: FakeSendGrid, pieces: Callable[[bytes], list[bytes]]
) -> None:
    with connect(fake) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces(mail_send()):
            sock.sendall(piece)
            time.sleep(0.05)
        status, _ = answer(sock)
    assert status == 202
    [request] = fake.requests
    assert request.body["subject"] == "Hej"


def test_a_request_with_no_header_fields_is_answered(fake: FakeSendGrid) -> None:
    with connect(fake) as sock:
        sock.sendall(b"GET /_fake/stats HTTP/1.1\r\n\r\n")
        status, _ = answer(sock)
    assert status == 200
