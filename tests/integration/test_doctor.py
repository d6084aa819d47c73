"""``nurture doctor``'s network checks against real local servers: the SendGrid
sandbox-mode request against the fake SendGrid server, and ``base_url``'s
``/healthz`` against a small HTTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from nurture.app.settings import Settings
from nurture.ops.doctor import base_url_checks, sendgrid_check
from nurture.testing import FakeSendGrid

API_KEY = "SG.doctor-test-key.d0ct0r-S3cret"
SENDER = "anna@acme.example"


def sendgrid_settings(host: str, key: str | None = API_KEY) -> Settings:
    return Settings(transport="sendgrid", sendgrid_api_key=key, sendgrid_api_host=host)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=API_KEY) as server:
        yield server


def test_a_working_key_is_checked_with_a_sandbox_request_that_sends_nothing(
    fake: FakeSendGrid,
) -> None:
    check = sendgrid_check(sendgrid_settings(fake.url), timeout=2, sender=SENDER)
    assert check.status == "ok", check
    assert "sandbox" in check.detail and SENDER in check.detail
    [request] = fake.requests
    assert request.body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert request.status == 200
    assert fake.delivered == []  # sandbox mode: validated, never delivered


def test_a_refused_key_fails_and_says_what_to_fix(fake: FakeSendGrid) -> None:
    check = sendgrid_check(sendgrid_settings(fake.url, "SG.wrong.key"), timeout=2, sender=SENDER)
    assert check.status == "fail"
    assert "401" in check.detail
    assert check.fix is not None and "NURTURE_SENDGRID_API_KEY" in check.fix
    assert "SG.wrong.key" not in check.detail + check.fix


def test_an_error_echoing_the_key_does_not_show_it(fake: FakeSendGrid) -> None:
    fake.enqueue("403", message=f"key {API_KEY} may not send from {SENDER}")
    check = sendgrid_check(sendgrid_settings(fake.url), timeout=2, sender=SENDER)
    assert check.status == "fail"
    assert API_KEY not in check.detail and "[redacted]" in check.detail
    assert check.fix is not None and "Sender Identity" in check.fix


def test_an_error_echoing_part_of_the_key_does_not_show_it(fake: FakeSendGrid) -> None:
    secret = API_KEY.split(".")[2]  # the key without "SG." and its id
    fake.enqueue("403", message=f"key {API_KEY.removeprefix('SG.')} ({secret}) may not send")
    check = sendgrid_check(sendgrid_settings(fake.url), timeout=2, sender=SENDER)
    assert check.status == "fail"
    assert secret not in check.detail and "doctor-test-key" not in check.detail
    assert check.detail.count("[redacted]") == 3, check.detail


@pytest.mark.parametrize("host", ["not-a-url", "https://[::1", "ftp://api.sendgrid.com"])
def test_an_api_host_that_is_no_url_fails_with_what_to_set(host: str) -> None:
    check = sendgrid_check(sendgrid_settings(host), timeout=1, sender=SENDER)
    assert check.status == "fail"
    assert "sendgrid_api_host" in check.detail and repr(host) in check.detail
    assert check.fix is not None and "NURTURE_SENDGRID_API_HOST" in check.fix


def test_no_key_and_no_server_fail() -> None:
    no_key = sendgrid_check(sendgrid_settings("http://127.0.0.1:9", None), timeout=1, sender=SENDER)
    assert no_key.status == "fail" and "NURTURE_SENDGRID_API_KEY" in (no_key.fix or "")
    port = free_port()
    gone = sendgrid_check(sendgrid_settings(f"http://127.0.0.1:{port}"), timeout=1, sender=SENDER)
    assert gone.status == "fail" and "cannot reach" in gone.detail


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[tuple[str, type[Health]]]:
    handler = type("Handler", (Health,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_base_url_answers_or_is_reported(site: tuple[str, type[Health]], tmp_path: Path) -> None:
    url, handler = site
    checks = base_url_checks(Settings(base_url=url), timeout=2)
    assert [c.status for c in checks] == ["warn", "ok"]  # not https, but it answers
    assert "not https" in checks[0].detail or "this machine" in checks[0].detail
    handler.status = 503
    checks = base_url_checks(Settings(base_url=url), timeout=2)
    assert checks[1].status == "warn" and "503" in checks[1].detail
    # A delivering transport with an http base_url is a failure.
    delivering = Settings(base_url=url, transport="smtp")
    assert base_url_checks(delivering, timeout=2)[0].status == "fail"
    port = free_port()
    gone = base_url_checks(Settings(base_url=f"http://127.0.0.1:{port}"), timeout=1)
    assert gone[1].status == "warn" and "failed from here" in gone[1].detail


@pytest.fixture
def smtp_port() -> Iterator[int]:
    """A minimal SMTP server: greets, answers EHLO, NOOP and QUIT."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as stream:
                stream.write(b"220 fake ESMTP\r\n")
                stream.flush()
                for line in stream:
                    verb = line[:4].upper()
                    reply = {b"EHLO": b"250 fake\r\n", b"QUIT": b"221 bye\r\n"}.get(
                        verb, b"250 ok\r\n"
                    )
                    stream.write(reply)
                    stream.flush()
                    if verb == b"QUIT":
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopping.set()
        listener.close()


def test_smtp_is_checked_by_connecting(smtp_port: int) -> None:
    from nurture.ops.doctor import smtp_check

    ok = smtp_check(Settings(transport="smtp", smtp_port=smtp_port), timeout=2)
    assert ok.status == "ok", ok
    assert ok.detail == f"smtp: connected to localhost:{smtp_port}"
    closed = free_port()
    gone = smtp_check(Settings(transport="smtp", smtp_port=closed), timeout=1)
    assert gone.status == "fail" and "smtp_host, smtp_port" in (gone.fix or "")


@pytest.mark.parametrize(
    ("transport", "status"), [("sendgrid", "fail"), ("smtp", "fail"), ("outbox", "ok")]
)
def test_a_sample_postal_address_fails_the_configuration_where_mail_goes_out(
    tmp_path: Path, transport: str, status: str
) -> None:
    """The worker refuses to start with it through a real transport, so doctor
    says so; with the outbox it stays the sequences check's warning."""
    from nurture.app.settings import load_settings
    from nurture.ops.doctor.setup import configuration_check

    sample = "Your Company, 1 Example Street, 12345 Your City, Country"
    (tmp_path / "nurture.toml").write_text(
        f'transport = "{transport}"\nsecret_key = "doctor-test-secret-not-a-placeholder"\n'
        f'postal_address = "{sample}"\n',
        encoding="utf-8",
    )
    check = configuration_check(load_settings(tmp_path))
    assert check.status == status, check
    if status == "fail":
        assert sample in check.detail and "NURTURE_POSTAL_ADDRESS" in (check.fix or "")
    (tmp_path / "nurture.toml").write_text(
        f'transport = "{transport}"\nsecret_key = "doctor-test-secret-not-a-placeholder"\n'
        'postal_address = "Berg Design AB, Verkstadsgatan 4, 117 43 Stockholm"\n',
        encoding="utf-8",
    )
    assert configuration_check(load_settings(tmp_path)).status == "ok"
