"""SendGridTransport through the real ``sendgrid`` library against FakeSendGrid.

Every test runs twice: ``pooled=True`` (our keep-alive connections) and
``pooled=False`` (the official client's own urllib request); both must behave
identically.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest

from nurture.app.settings import Settings
from nurture.core.rendering import ComposedEmail, RenderedEmail
from nurture.errors import (
    AmbiguousSendError,
    AuthenticationError,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from nurture.testing import FakeSendGrid
from nurture.transports import create_transport
from nurture.transports.base import OutgoingEmail, SendResult
from nurture.transports.sendgrid import SendGridTransport
from nurture.transports.sendgrid_mail import RESERVED_HEADERS

API_KEY = "SG.nurture-test-key.s3cr3t-Part-0f-the-key"
TIMEOUT = 0.5


def make_email(send_id: str = "send-1", to: str = "bo@example.org") -> OutgoingEmail:
    message = EmailMessage()
    message["From"] = "Anna på Exempel AB <anna@example.com>"
    message["To"] = f"Bo Ek <{to}>"
    message["Reply-To"] = "Anna <svar@example.com>"
    message["Subject"] = "Välkommen – första steget"
    message["Date"] = format_datetime(datetime(2026, 11, 27, 15, 30, tzinfo=UTC))
    message["Message-ID"] = f"<{send_id}@nurture.example.com>"
    message["List-Unsubscribe"] = (
        f"<https://example.com/u/{send_id}>, <mailto:unsubscribe@example.com?subject={send_id}>"
    )
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["List-Id"] = "Välkomstserien <welcome.list.example.com>"
    message["X-Nurture-Send-Id"] = send_id
    message.set_content("Hej Bo!\n\nVälkommen.\n")
    message.add_alternative("<p>Hej Bo!</p><p>Välkommen.</p>", subtype="html")
    return OutgoingEmail(message, send_id, "welcome-series", "welcome", to)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=API_KEY) as server:
        yield server


@pytest.fixture(params=[True, False], ids=["pooled", "official-client"])
def pooled(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def transport(fake: FakeSendGrid, pooled: bool) -> Iterator[SendGridTransport]:
    transport = SendGridTransport(API_KEY, host=fake.url, timeout=TIMEOUT, pooled=pooled)
    yield transport
    transport.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_accepted_email_returns_the_message_id(
    transport: SendGridTransport, fake: FakeSendGrid
) -> None:
    result = transport.send(make_email())

    (request,) = fake.requests
    assert request.accepted
    assert result.provider == "sendgrid"
    assert result.message_id == request.message_id
    assert result.raw["status"] == 202
    assert fake.delivered == [request.body]


def test_a_composed_email_is_sent(transport: SendGridTransport, fake: FakeSendGrid) -> None:
    """What the dispatcher passes: a ComposedEmail, read without an EmailMessage."""
    rendered = RenderedEmail(
        subject="Välkommen",
        preheader="",
        text="Hej Bo!\n",
        html="<p>Hej Bo!</p>",
        headers={
            "List-Unsubscribe": "<https://example.com/u/send-1>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    composed = ComposedEmail(
        rendered=rendered,
        sender_name="Anna på Exempel AB",
        sender_email="anna@example.com",
        reply_to=None,
        to_email="bo@example.org",
        to_name="Bo Ek",
        message_id="<send-1.welcome@example.com>",
        date=datetime(2026, 11, 27, 15, 30, tzinfo=UTC),
    )
    email = OutgoingEmail(composed, "send-1", "welcome-series", "welcome", "bo@example.org")

    result = transport.send(email)

    (body,) = fake.delivered
    assert result.message_id == fake.requests[0].message_id
    assert body["custom_args"]["nurture_send_id"] == "send-1"
    assert body["content"] == [
        {"type": "text/plain", "value": "Hej Bo!\n"},
        {"type": "text/html", "value": "<p>Hej Bo!</p>"},
    ]


def test_request_body_keeps_the_api_constraints(
    transport: SendGridTransport, fake: FakeSendGrid
) -> None:
    transport.send(make_email())

    body = fake.requests[0].body
    custom_args = body["custom_args"]
    assert custom_args == {
        "nurture_send_id": "send-1",
        "nurture_sequence": "welcome-series",
        "nurture_step": "welcome",
    }
    assert all(isinstance(v, str) for v in custom_args.values())
    assert body["categories"] == ["welcome-series"]
    assert len(body["categories"]) <= 10
    headers = body["headers"]
    assert headers["List-Unsubscribe"].startswith("<https://example.com/u/send-1>")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["X-Nurture-Send-Id"] == "send-1"
    assert not {name.lower() for name in headers} & (RESERVED_HEADERS | {"date", "message-id"})
    assert body["from"] == {"name": "Anna på Exempel AB", "email": "anna@example.com"}
    assert body["reply_to"] == {"name": "Anna", "email": "svar@example.com"}
    assert body["subject"] == "Välkommen – första steget"
    assert body["personalizations"] == [{"to": [{"name": "Bo Ek", "email": "bo@example.org"}]}]
    assert [part["type"] for part in body["content"]] == ["text/plain", "text/html"]


def test_request_headers_carry_the_key_and_the_library(
    transport: SendGridTransport, fake: FakeSendGrid
) -> None:
    transport.send(make_email())
    headers = fake.requests[0].headers
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("sendgrid/")
    assert fake.requests[0].path == "/v3/mail/send"


def test_both_paths_send_the_same_bytes_and_headers(fake: FakeSendGrid) -> None:
    for pooled in (True, False):
        with_pool = SendGridTransport(API_KEY, host=fake.url, timeout=TIMEOUT, pooled=pooled)
        with_pool.send(make_email())
        with_pool.close()

    pooled_request, official_request = fake.requests
    assert pooled_request.raw_body == official_request.raw_body
    for name in ("authorization", "content-type", "user-agent", "accept"):
        assert pooled_request.headers[name] == official_request.headers[name]


def test_pooled_path_keeps_connections_alive(fake: FakeSendGrid) -> None:
    transport = SendGridTransport(API_KEY, host=fake.url, timeout=TIMEOUT)
    for index in range(10):
        transport.send(make_email(f"s{index}"))
    transport.close()
    assert fake.stats() == {"received": 10, "delivered": 10, "connections": 1}


def test_pooled_path_replaces_connections_the_server_closed() -> None:
    with FakeSendGrid(api_key=API_KEY) as first:
        url = first.url
        transport = SendGridTransport(API_KEY, host=url, timeout=TIMEOUT)
        transport.send(make_email("a"))
    # Stopping closed the kept-alive connection; a new server takes the port.
    port = int(url.rsplit(":", 1)[1])
    with FakeSendGrid(api_key=API_KEY, port=port) as second:
        transport.send(make_email("b"))  # not an AmbiguousSendError on the dead one
        assert len(second.delivered) == 1
    transport.close()


def test_rate_limit_is_transient_with_the_reset_time(
    transport: SendGridTransport, fake: FakeSendGrid
) -> None:
    fake.enqueue("429", reset_in=2.0)
    with pytest.raises(TransientSendError) as error:
        transport.send(make_email())
    assert error.value.status == 429
    # X-RateLimit-Reset is a whole epoch second at or after now + 2 s.
    assert error.value.retry_after is not None
    assert 1.5 <= error.value.retry_after <= 3.1
    assert fake.delivered == []
    transport.send(make_email())  # the next one goes through
    assert len(fake.delivered) == 1


@pytest.mark.parametrize("status", ["500", "503"])
def test_server_errors_are_transient(
    transport: SendGridTransport, fake: FakeSendGrid, status: str
) -> None:
    fake.enqueue(status)
    with pytest.raises(TransientSendError) as error:
        transport.send(make_email())
    assert error.value.status == int(status)


def test_a_hung_request_is_ambiguous_within_the_timeout(
    transport: SendGridTransport, fake: FakeSendGrid
) -> None:
    fake.enqueue("hang", seconds=5.0)
    started = time.monotonic()
    with pytest.raises(AmbiguousSendError, match="may have accepted"):
        transport.send(make_email())
    assert time.monotonic() - started < TIMEOUT + 1.0


@pytest.mark.parametrize("kind", ["drop", "reset"])
def test_a_connection_lost_after_the_body_is_ambiguous(
    transport: SendGridTransport, fake: FakeSendGrid, kind: str
) -> None:
    fake.enqueue(kind)
    with pytest.raises(AmbiguousSendError):
        transport.send(make_email())
    assert fake.requests[0].raw_body  # the server had the whole request
    transport.send(make_email())  # and the transport recovers
    assert len(fake.delivered) == 1


def test_connection_refused_is_transient(pooled: bool) -> None:
    transport = SendGridTransport(
        API_KEY, host=f"http://127.0.0.1:{closed_port()}", timeout=TIMEOUT, pooled=pooled
    )
    with pytest.raises(TransientSendError, match="not sent"):
        transport.send(make_email())


def test_an_unknown_host_is_transient(pooled: bool) -> None:
    transport = SendGridTransport(
        API_KEY, host="http://sendgrid.invalid", timeout=TIMEOUT, pooled=pooled
    )
    with pytest.raises(TransientSendError, match="not sent"):
        transport.send(make_email())  # RFC 2606: .invalid never resolves


@pytest.mark.parametrize("status", ["401", "403"])
def test_refused_key_is_loud_and_never_shows_the_key(
    transport: SendGridTransport, fake: FakeSendGrid, status: str
) -> None:
    fake.enqueue(status)
    with pytest.raises(AuthenticationError) as error:
        transport.send(make_email())
    message = str(error.value)
    assert "mail.send" in message
    assert "NURTURE_SENDGRID_API_KEY" in message
    assert API_KEY not in message
    assert API_KEY not in repr(error.value.__cause__)
    assert API_KEY not in repr(transport)


def test_a_wrong_key_is_refused(fake: FakeSendGrid, pooled: bool) -> None:
    transport = SendGridTransport("SG.wrong.key", host=fake.url, timeout=TIMEOUT, pooled=pooled)
    with pytest.raises(AuthenticationError) as error:
        transport.send(make_email())
    assert error.value.status == 401
    assert "SG.wrong.key" not in str(error.value)


def test_an_invalid_address_is_permanent_and_marked(
    transport: SendGridTransport, fake: FakeSendGrid
) -> None:
    fake.enqueue("400", invalid_email=True)
    with pytest.raises(PermanentSendError) as error:
        transport.send(make_email())
    assert error.value.invalid_address
    assert error.value.status == 400
    assert "Does not contain a valid address" in str(error.value)


@pytest.mark.parametrize("status", ["400", "413"])
def test_other_rejections_are_permanent(
    transport: SendGridTransport, fake: FakeSendGrid, status: str
) -> None:
    fake.enqueue(status)
    with pytest.raises(PermanentSendError) as error:
        transport.send(make_email())
    assert not error.value.invalid_address
    assert not isinstance(error.value, AuthenticationError)


FAILURES: dict[str, type[SendError]] = {
    "400": PermanentSendError,
    "401": AuthenticationError,
    "403": AuthenticationError,
    "413": PermanentSendError,
    "429": TransientSendError,
    "500": TransientSendError,
    "503": TransientSendError,
    "hang": AmbiguousSendError,
    "drop": AmbiguousSendError,
    "reset": AmbiguousSendError,
    "lost-answer": AmbiguousSendError,
}


def test_every_failure_of_the_fake_is_covered() -> None:
    from nurture.testing.fake_sendgrid_http import BEHAVIOURS

    assert set(FAILURES) == BEHAVIOURS - {"accept"}


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_no_lower_level_exception_escapes(
    transport: SendGridTransport, fake: FakeSendGrid, kind: str
) -> None:
    """Each failure mode raises a nurture SendError of one class on both paths.

    ``pytest.raises(SendError)`` lets anything else (urllib, http.client,
    python_http_client, socket errors) through, which fails the test.
    """
    fake.enqueue(kind, seconds=3.0, reset_in=1.0)
    with pytest.raises(SendError) as error:
        transport.send(make_email())
    assert type(error.value) is FAILURES[kind]
    assert not isinstance(error.value.__cause__, SendError)


def test_the_key_never_reaches_the_logs(
    transport: SendGridTransport, fake: FakeSendGrid, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for kind in ("accept", "401", "500", "drop"):
        fake.enqueue(kind)
        try:
            transport.send(make_email())
        except SendError as exc:
            logging.getLogger("test").exception("send failed: %s", exc)
    assert caplog.records  # something was logged, at DEBUG too
    assert API_KEY not in caplog.text
    assert API_KEY.split(".")[2] not in caplog.text


def test_the_key_is_redacted_even_when_the_library_logs_headers(
    fake: FakeSendGrid, caplog: pytest.LogCaptureFixture
) -> None:
    transport = SendGridTransport(API_KEY, host=fake.url, timeout=TIMEOUT, pooled=False)
    # An application that turns the library's DEBUG logging back on on purpose.
    caplog.set_level(logging.DEBUG, logger="python_http_client")
    transport.send(make_email())
    assert "HEADERS" in caplog.text  # python_http_client logged the request headers...
    assert "Bearer [redacted]" in caplog.text  # ...without the key
    assert API_KEY not in caplog.text


def test_sends_from_many_threads(fake: FakeSendGrid, pooled: bool) -> None:
    transport = SendGridTransport(
        API_KEY, host=fake.url, timeout=5.0, pooled=pooled, max_connections=16
    )
    emails = [make_email(f"s{i}", to=f"bo{i}@example.org") for i in range(200)]
    results: list[str | None] = []
    lock = threading.Lock()

    def send(chunk: list[OutgoingEmail]) -> None:
        for email in chunk:
            result = transport.send(email)
            with lock:
                results.append(result.message_id)

    threads = [threading.Thread(target=send, args=(emails[i::32],)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    transport.close()

    assert len(set(results)) == 200
    sent_ids = sorted(body["custom_args"]["nurture_send_id"] for body in fake.delivered)
    assert sent_ids == sorted(e.send_id for e in emails)
    if pooled:
        assert fake.stats()["connections"] <= 16


def test_send_after_close_is_transient(transport: SendGridTransport) -> None:
    transport.close()
    with pytest.raises(TransientSendError, match="closed"):
        transport.send(make_email())


def test_built_from_settings(fake: FakeSendGrid) -> None:
    settings = Settings(
        transport="sendgrid",
        sendgrid_api_key=API_KEY,
        sendgrid_api_host=fake.url,
        sendgrid_timeout=TIMEOUT,
    )
    transport = create_transport(settings)
    assert transport.send(make_email()).message_id == fake.requests[0].message_id
    transport.close()


# -- HTTPS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cryptography comes with sendgrid)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake SendGrid")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def https_fake(certificate: tuple[Path, Path]) -> Iterator[FakeSendGrid]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with FakeSendGrid(api_key=API_KEY, ssl_context=context) as server:
        yield server


def test_https_to_a_trusted_certificate(
    https_fake: FakeSendGrid,
    certificate: tuple[Path, Path],
    pooled: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both clients use the system's default trust store, which OpenSSL reads
    # from SSL_CERT_FILE: trust the fake's certificate, and only it.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    assert https_fake.url.startswith("https://127.0.0.1:")
    transport = SendGridTransport(API_KEY, host=https_fake.url, timeout=2.0, pooled=pooled)
    transport.send(make_email("a"))
    transport.send(make_email("b"))
    transport.close()
    assert len(https_fake.delivered) == 2
    assert https_fake.stats()["connections"] == (1 if pooled else 2)


def test_https_to_an_untrusted_certificate_stops(https_fake: FakeSendGrid, pooled: bool) -> None:
    transport = SendGridTransport(API_KEY, host=https_fake.url, timeout=2.0, pooled=pooled)
    with pytest.raises(AuthenticationError, match="certificate") as error:
        transport.send(make_email())
    assert API_KEY not in str(error.value)
    assert https_fake.requests == []  # the key never left


class ConnectProxy:
    """An HTTP proxy that only tunnels (CONNECT), as corporate proxies do:
    it records each CONNECT's header block, answers ``status``, and on 200
    pipes bytes both ways until either side closes."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._spawn(self._tunnel, client)

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        self.requests.append(head)
        if self.status != 200:
            client.sendall(b"HTTP/1.1 %d No\r\nContent-Length: 0\r\n\r\n" % self.status)
            client.close()
            return
        target = head.split(b" ")[1].decode()
        host, _, port = target.rpartition(":")
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._spawn(self._pipe, upstream, client)
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


def test_https_through_a_tunnelling_proxy(
    https_fake: FakeSendGrid,
    certificate: tuple[Path, Path],
    pooled: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY as an office network sets it: both clients tunnel (CONNECT),
    give the proxy its credentials, and verify SendGrid's certificate through
    the tunnel."""
    proxy = ConnectProxy()
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    monkeypatch.setenv("HTTPS_PROXY", f"http://anna:p%40ss@127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        transport = SendGridTransport(API_KEY, host=https_fake.url, timeout=2.0, pooled=pooled)
        transport.send(make_email("a"))
        transport.send(make_email("b"))
        transport.close()
    finally:
        proxy.close()
    assert len(https_fake.delivered) == 2
    assert len(proxy.requests) == (1 if pooled else 2)  # the pool keeps its tunnel
    first = proxy.requests[0].decode()
    assert first.startswith(f"CONNECT 127.0.0.1:{https_fake.url.rsplit(':', 1)[1]} HTTP/1.")
    assert "Proxy-Authorization: Basic YW5uYTpwQHNz" in first  # anna:p@ss
    assert API_KEY not in first  # the key only ever goes inside the tunnel


def test_a_proxy_that_refuses_the_tunnel_is_a_transient_failure(
    https_fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = ConnectProxy(status=407)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        transport = SendGridTransport(API_KEY, host=https_fake.url, timeout=2.0)
        with pytest.raises(TransientSendError, match="407"):
            transport.send(make_email())
        transport.close()
    finally:
        proxy.close()
    assert https_fake.requests == []


# -- the fake itself ---------------------------------------------------------------


def test_the_fake_stops_promptly_while_a_request_hangs() -> None:
    fake = FakeSendGrid(api_key=API_KEY).start()
    fake.enqueue("hang", seconds=60.0)
    transport = SendGridTransport(API_KEY, host=fake.url, timeout=0.2)
    with pytest.raises(AmbiguousSendError):
        transport.send(make_email())
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.0
    transport.close()


def test_the_fake_rejects_what_the_api_would(fake: FakeSendGrid) -> None:
    """Its own checks, independent of the transport's: a body without a sender."""
    request = urllib.request.Request(
        f"{fake.url}/v3/mail/send",
        data=json.dumps({"personalizations": [{"to": [{"email": "bo@example.org"}]}]}).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=5)
    assert answer.value.code == 400
    (error,) = json.load(answer.value)["errors"]
    assert error["field"] == "from.email"
    assert fake.delivered == []


def test_the_fake_runs_in_another_process() -> None:
    with FakeSendGrid.start_subprocess(api_key=API_KEY, latency=0.01) as fake:
        transport = SendGridTransport(API_KEY, host=fake.url, timeout=2.0)
        fake.enqueue("500")
        with pytest.raises(TransientSendError):
            transport.send(make_email("a"))
        assert transport.send(make_email("b")).message_id
        stats = fake.stats()
        assert (stats["received"], stats["delivered"]) == (2, 1)
        transport.close()


# -- pooled: many requests in flight on one thread -----------------------------


class Outcomes:
    """The outcomes ``submit`` hands over, by send id, in the order they came."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.by_id: dict[str, object] = {}
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def done_for(self, send_id: str) -> Callable[[object], None]:
        def done(outcome: object) -> None:
            with self._cond:
                self.order.append(send_id)
                self.by_id[send_id] = outcome
                self.threads.add(threading.current_thread().name)
                self._cond.notify_all()

        return done

    def wait(self, count: int, timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.order) >= count, timeout)


def test_submit_returns_before_the_answers_and_one_thread_waits_for_all() -> None:
    with FakeSendGrid(api_key=API_KEY, latency=0.3) as slow:
        transport = SendGridTransport(API_KEY, host=slow.url, timeout=5.0)
        assert transport.multiplexed
        outcomes = Outcomes()
        before = set(threading.enumerate())
        for index in range(40):
            transport.submit(make_email(f"s{index}"), outcomes.done_for(f"s{index}"))
        assert outcomes.order == []  # every submit came back before any answer
        outcomes.wait(40)
        started = [thread.name for thread in threading.enumerate() if thread not in before]
        transport.close()
    assert all(isinstance(outcome, SendResult) for outcome in outcomes.by_id.values())
    assert slow.stats()["delivered"] == 40
    assert outcomes.threads == {"nurture-http"}  # every answer taken by the pool's thread
    # The pool's thread and at most its 8 connecting helpers: no thread per request.
    assert started.count("nurture-http") == 1 and len(started) <= 9


def test_submitted_sends_end_as_send_does() -> None:
    """Each answer (and each failure) reaches ``done`` as the error ``send`` raises."""
    with FakeSendGrid(api_key=API_KEY) as fake:
        transport = SendGridTransport(API_KEY, host=fake.url, timeout=TIMEOUT)
        outcomes = Outcomes()
        for index, kind in enumerate(["429", "500", "hang", "drop", "400", None]):
            if kind is not None:
                fake.enqueue(kind, seconds=3.0)
            transport.submit(make_email(f"s{index}"), outcomes.done_for(f"s{index}"))
            outcomes.wait(index + 1)
        transport.close()
    got = [outcomes.by_id[f"s{index}"] for index in range(6)]
    assert isinstance(got[0], TransientSendError) and got[0].status == 429
    assert got[0].retry_after is not None
    assert isinstance(got[1], TransientSendError) and got[1].status == 500
    assert isinstance(got[2], AmbiguousSendError)
    assert isinstance(got[3], AmbiguousSendError)
    assert isinstance(got[4], PermanentSendError) and got[4].status == 400
    assert isinstance(got[5], SendResult) and got[5].message_id
    assert API_KEY not in "".join(str(outcome) for outcome in got)


def test_a_hung_request_holds_up_no_other() -> None:
    with FakeSendGrid(api_key=API_KEY) as fake:
        transport = SendGridTransport(API_KEY, host=fake.url, timeout=1.5)
        outcomes = Outcomes()
        fake.enqueue("hang", seconds=4.0)
        transport.submit(make_email("hung"), outcomes.done_for("hung"))
        time.sleep(0.3)  # with the server (which gives "hang" to the first to arrive)
        for index in range(5):
            transport.submit(make_email(f"s{index}"), outcomes.done_for(f"s{index}"))
        outcomes.wait(6)
        transport.close()
    assert outcomes.order[-1] == "hung"  # the others were answered while it hung
    assert isinstance(outcomes.by_id["hung"], AmbiguousSendError)
    assert len(fake.delivered) == 5


def test_a_closed_transport_refuses_what_is_submitted(fake: FakeSendGrid) -> None:
    transport = SendGridTransport(API_KEY, host=fake.url, timeout=TIMEOUT)
    transport.close()
    outcomes = Outcomes()
    transport.submit(make_email("late"), outcomes.done_for("late"))
    assert outcomes.order == ["late"]  # at once, in the caller's thread
    assert isinstance(outcomes.by_id["late"], TransientSendError)
    assert fake.stats()["received"] == 0
