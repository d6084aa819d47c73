"""Transports: outbox files, the memory transport, the registry, SMTP, SendGrid request bodies.

SMTP runs against a small SMTP server (``tests/transport_kit.py``: 127.0.0.1, a
thread per connection) that speaks EHLO/AUTH/MAIL/RCPT/DATA/RSET/QUIT and can be
told to refuse, hang or drop at each step. What every transport must do alike is
in ``tests/contract/test_transport_contract.py``.
"""

from __future__ import annotations

import base64
import json
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from nurture.app.settings import Settings, load_settings
from nurture.core.rendering import ComposedEmail
from nurture.errors import (
    AmbiguousSendError,
    AuthenticationError,
    ConfigurationError,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from nurture.testing import MemoryTransport
from nurture.transports import Transport, create_transport, known_transports
from nurture.transports.base import OutgoingEmail, SendResult
from nurture.transports.http_wire import Reply, https_proxy
from nurture.transports.outbox import OutboxTransport
from nurture.transports.sendgrid import SendGridTransport, error_for_status, retry_after_seconds
from nurture.transports.sendgrid_mail import build_mail_body, validate_mail_body
from nurture.transports.smtp import SMTPTransport
from tests.transport_kit import (
    FakeSMTPServer,
    closed_port,
    make_composed,
    make_email,
    parse,
    send_from_threads,
    text_of,
)

DATA = Path(__file__).parent.parent / "data"


def test_send_from_threads_raises_what_a_thread_raised() -> None:
    """The helper must not swallow a failed send: the thread tests rely on it."""

    def refuse_s3(email: OutgoingEmail) -> None:
        if email.send_id == "s3":
            raise PermanentSendError("refused")

    memory = MemoryTransport(hook=refuse_s3)
    emails = [make_email(send_id=f"s{i}") for i in range(8)]
    with pytest.raises(ExceptionGroup) as raised:
        send_from_threads(memory, emails, 4)
    assert [type(e) for e in raised.value.exceptions] == [PermanentSendError]
    # The failing thread (s3, s7) stopped at its failure; the others finished.
    assert sorted(e.send_id for e in memory.sent) == ["s0", "s1", "s2", "s4", "s5", "s6"]


# -- outbox --------------------------------------------------------------------


def test_outbox_writes_a_parseable_eml_named_by_date(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path / "outbox")  # created on first send
    email = make_email()

    result = outbox.send(email)

    files = list((tmp_path / "outbox").iterdir())
    assert [f.name for f in files] == ["20261127T153000.000000Z-send-1-welcome.eml"]
    parsed = parse(files[0].read_bytes())
    assert parsed["Subject"] == "Välkommen – första steget"
    assert parsed["From"].addresses[0].display_name == "Anna på Exempel AB"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert text_of(parsed) == "Hej Bo!\n\nVälkommen.\n"
    assert result == SendResult("outbox", "<send-1@nurture.example.com>")
    assert result.raw["path"] == str(files[0])


def test_outbox_writes_a_composed_email(tmp_path: Path) -> None:
    result = OutboxTransport(tmp_path).send(make_composed())
    (written,) = tmp_path.iterdir()
    assert written.name == "20261127T153000.000000Z-send-1-welcome.eml"
    parsed = parse(written.read_bytes())
    assert parsed["Subject"] == "Välkommen – första steget"
    assert text_of(parsed) == "Hej Bo!\n\nVälkommen.\n"
    assert result.message_id == "<send-1.welcome@example.com>"


def test_outbox_file_names_sort_in_sending_order(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path)
    stockholm = timezone(timedelta(hours=1))
    new_york = timezone(timedelta(hours=-5))
    dates = [  # written out of order, in several zones
        datetime(2026, 11, 27, 9, 0, tzinfo=new_york),  # 14:00 UTC
        datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 27, 14, 30, tzinfo=stockholm),  # 13:30 UTC
        datetime(2026, 1, 2, 8, 0, tzinfo=UTC),
    ]
    for index, date in enumerate(dates):
        outbox.send(make_email(send_id=f"s{index}", date=date))

    names = sorted(p.name for p in tmp_path.glob("*.eml"))
    assert [n.split("-")[1] for n in names] == ["s3", "s1", "s2", "s0"]


def test_outbox_without_date_uses_the_time_of_writing(tmp_path: Path) -> None:
    written = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    outbox = OutboxTransport(tmp_path, clock=lambda: written)

    outbox.send(make_email(date=None))

    assert [p.name for p in tmp_path.iterdir()] == ["20300506T070809.123456Z-send-1-welcome.eml"]


def test_outbox_writes_atomically(tmp_path: Path) -> None:
    """A reader listing *.eml while emails are written only ever sees whole files."""
    outbox = OutboxTransport(tmp_path)
    big = "En lång rad text.\n" * 20_000  # about 400 kB per file
    done = threading.Event()
    seen_incomplete: list[str] = []

    def reader() -> None:
        while not done.is_set():
            for path in tmp_path.glob("*.eml"):
                data = path.read_bytes()
                if not data.rstrip().endswith(b"--"):  # the closing MIME boundary
                    seen_incomplete.append(path.name)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for index in range(12):
            outbox.send(make_email(send_id=f"s{index}", text=big))
    finally:
        done.set()
        thread.join()
    assert seen_incomplete == []
    assert len(list(tmp_path.glob("*.eml"))) == 12
    assert list(tmp_path.glob(".*")) == []  # no temporary files left behind


def test_outbox_writes_from_many_threads(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path / "new")  # the folder is created by racing threads
    emails = [make_email(send_id=f"s{i}") for i in range(64)]
    send_from_threads(outbox, emails, 8)
    assert len(list((tmp_path / "new").glob("*.eml"))) == 64


def test_outbox_resending_the_same_step_replaces_the_file(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path)
    outbox.send(make_email())
    outbox.send(make_email())
    assert len(list(tmp_path.iterdir())) == 1


def test_outbox_keeps_ids_inside_the_folder(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path / "out")
    outbox.send(make_email(send_id="../../etc/passwd", step_id="a/b"))
    (written,) = (tmp_path / "out").iterdir()
    assert written.name == "20261127T153000.000000Z-_.._etc_passwd-a_b.eml"


def test_outbox_that_cannot_write_is_transient(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(TransientSendError, match="cannot write"):
        OutboxTransport(not_a_folder).send(make_email())


def test_outbox_after_close_is_transient(tmp_path: Path) -> None:
    outbox = OutboxTransport(tmp_path)
    outbox.close()
    with pytest.raises(TransientSendError, match="closed"):
        outbox.send(make_email())


# -- memory ----------------------------------------------------------------------


def test_memory_transport_records_what_it_accepts() -> None:
    memory = MemoryTransport()
    result = memory.send(make_email())
    assert result.provider == "memory"
    assert result.message_id == "<send-1@nurture.example.com>"
    assert [e.send_id for e in memory.sent] == ["send-1"]
    assert memory.sent_to("BO@example.org") == memory.sent


def test_memory_transport_takes_a_composed_email() -> None:
    memory = MemoryTransport()
    assert memory.send(make_composed()).message_id == "<send-1.welcome@example.com>"


def test_memory_transport_fails_when_told() -> None:
    memory = MemoryTransport()
    memory.fail_next(TransientSendError("429", status=429, retry_after=2.0))
    memory.accept_then_raise(AmbiguousSendError("timed out"))

    with pytest.raises(TransientSendError) as refused:
        memory.send(make_email(send_id="a"))
    with pytest.raises(AmbiguousSendError):
        memory.send(make_email(send_id="b"))
    memory.send(make_email(send_id="c"))

    assert refused.value.retry_after == 2.0
    assert [e.send_id for e in memory.sent] == ["b", "c"]  # "b" was accepted, then lost


def test_memory_transport_hook_sees_every_email() -> None:
    def refuse_one_address(email: OutgoingEmail) -> None:
        if email.to_email == "bad@example.org":
            raise PermanentSendError("no such user", invalid_address=True)

    memory = MemoryTransport(hook=refuse_one_address)
    memory.send(make_email(to="bo@example.org"))
    with pytest.raises(PermanentSendError):
        memory.send(make_email(to="bad@example.org"))
    assert len(memory.sent) == 1


def test_memory_transport_is_thread_safe() -> None:
    memory = MemoryTransport()
    emails = [make_email(send_id=f"s{i}") for i in range(160)]
    send_from_threads(memory, emails, 16)
    assert sorted(e.send_id for e in memory.sent) == sorted(e.send_id for e in emails)


def test_memory_transport_after_close_is_transient() -> None:
    memory = MemoryTransport()
    memory.close()
    with pytest.raises(TransientSendError):
        memory.send(make_email())


# -- the registry -----------------------------------------------------------------


def test_every_transport_is_registered() -> None:
    assert known_transports() == ["memory", "outbox", "sendgrid", "smtp"]


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("outbox", OutboxTransport),
        ("sendgrid", SendGridTransport),
        ("smtp", SMTPTransport),
        ("memory", MemoryTransport),
    ],
)
def test_create_transport_builds_the_named_transport(
    name: str, cls: type[Any], tmp_path: Path
) -> None:
    settings = Settings(transport=name, outbox_dir=tmp_path, sendgrid_api_key="SG.a.b")
    transport = create_transport(settings)
    try:
        assert isinstance(transport, cls)
        assert isinstance(transport, Transport)
        assert transport.name == name
    finally:
        transport.close()


def test_create_transport_passes_the_settings_on(tmp_path: Path) -> None:
    outbox = create_transport(Settings(transport="outbox", outbox_dir=tmp_path / "x"))
    assert isinstance(outbox, OutboxTransport)
    assert outbox.directory == tmp_path / "x"
    sendgrid = create_transport(
        Settings(
            transport="sendgrid",
            sendgrid_api_key="SG.a.b",
            sendgrid_api_host="http://127.0.0.1:9",
            sendgrid_timeout=0.5,
        )
    )
    assert isinstance(sendgrid, SendGridTransport)
    assert (sendgrid.host, sendgrid.timeout) == ("http://127.0.0.1:9", 0.5)
    sendgrid.close()


def test_unknown_transport_names_the_setting_and_the_choices() -> None:
    settings = Settings().model_copy(update={"transport": "pigeon"})
    with pytest.raises(ConfigurationError) as error:
        create_transport(settings)
    message = str(error.value)
    assert "NURTURE_TRANSPORT" in message
    assert "'pigeon'" in message
    assert "memory, outbox, sendgrid, smtp" in message


PLUGIN_MODULE = "nurture_pigeon_plugin"


@pytest.fixture
def pigeon_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed plugin registering transport ``pigeon``, as pip would leave it:
    a module and a ``.dist-info`` folder whose entry_points.txt importlib.metadata reads."""
    site = tmp_path / "site-packages"
    dist_info = site / "nurture_pigeon-0.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nurture-pigeon\nVersion: 0.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[nurture.transports]\npigeon = {PLUGIN_MODULE}:PigeonTransport\n"
    )
    (site / f"{PLUGIN_MODULE}.py").write_text(
        textwrap.dedent(
            """
            from nurture.transports.base import SendResult

            class PigeonTransport:
                name = "pigeon"

                def __init__(self, loft):
                    self.loft = loft

                @classmethod
                def from_settings(cls, settings):
                    return cls(settings.outbox_dir)

                def send(self, email):
                    return SendResult(provider=self.name, message_id=email.send_id)

                def close(self):
                    pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))  # also invalidates the import caches
    yield
    sys.modules.pop(PLUGIN_MODULE, None)


@pytest.mark.usefixtures("pigeon_plugin")
def test_a_plugin_transport_is_accepted_by_the_settings_and_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_TRANSPORT", "pigeon")
    settings = load_settings(tmp_path)
    assert settings.transport == "pigeon"
    assert "pigeon" in known_transports()

    transport = create_transport(settings)

    assert type(transport).__name__ == "PigeonTransport"
    assert isinstance(transport, Transport)
    assert transport.send(make_email()).message_id == "send-1"
    assert transport.loft == tmp_path / "outbox"  # type: ignore[attr-defined]


def test_an_unknown_transport_is_refused_with_the_known_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_settings(tmp_path, transport="pigeon")
    message = str(error.value)
    assert "NURTURE_TRANSPORT" in message
    assert "'pigeon'" in message
    assert "known transports: memory, outbox, sendgrid, smtp" in message


def test_sendgrid_without_a_key_names_the_environment_variable() -> None:
    with pytest.raises(ConfigurationError, match="NURTURE_SENDGRID_API_KEY"):
        create_transport(Settings(transport="sendgrid"))


# -- the SendGrid request body ------------------------------------------------------


def test_sendgrid_body_matches_the_captured_sample() -> None:
    expected = json.loads((DATA / "sendgrid" / "mail_send_body.json").read_text())
    assert build_mail_body(make_email()) == expected
    assert validate_mail_body(expected) == []


def test_sendgrid_body_is_the_same_from_a_composed_email() -> None:
    """The dispatcher's fast path (structured fields) builds the request the
    EmailMessage path would build from the same email."""
    fast = make_composed()
    assert isinstance(fast.message, ComposedEmail)
    slow = OutgoingEmail(fast.message.message, "send-1", "welcome-series", "welcome", fast.to_email)
    fast_body, slow_body = build_mail_body(fast), build_mail_body(slow)
    # set_content() ends the html part with a newline; nothing else may differ.
    slow_body["content"][1]["value"] = slow_body["content"][1]["value"].rstrip("\n")
    assert fast_body == slow_body
    assert validate_mail_body(fast_body) == []


def test_sendgrid_body_leaves_reserved_and_provider_headers_out() -> None:
    headers = build_mail_body(make_email())["headers"]
    lower = {name.lower() for name in headers}
    assert lower.isdisjoint({"from", "to", "subject", "reply-to", "date", "message-id"})
    assert lower.isdisjoint({"content-type", "mime-version", "content-transfer-encoding"})
    # Unicode in a header value arrives RFC 2047 encoded, the <list-id> intact.
    assert headers["List-Id"] == "=?utf-8?q?V=C3=A4lkomstserien?= <welcome.list.example.com>"


def test_sendgrid_body_drops_separators_from_the_recipient_name() -> None:
    email = make_email()
    message = email.as_message()
    del message["To"]
    message["To"] = '"Ek, Bo; jr" <bo@example.org>'
    (recipient,) = build_mail_body(email)["personalizations"][0]["to"]
    assert recipient == {"name": "Ek Bo jr", "email": "bo@example.org"}


def test_sendgrid_body_refuses_attachments() -> None:
    email = make_email()
    email.as_message().add_attachment(b"%PDF", maintype="application", subtype="pdf")
    with pytest.raises(PermanentSendError, match="not supported"):
        build_mail_body(email)


def test_sendgrid_validation_reports_each_broken_constraint() -> None:
    body = build_mail_body(make_email())
    body["custom_args"] = {"nurture_send_id": 42, "big": "x" * 10_000}
    body["categories"] = [f"c{i}" for i in range(11)] + ["x" * 256]
    body["headers"] = {"From": "someone@example.com", "X-Empty": ""}
    body["content"] = [{"type": "text/html", "value": "<p>"}, {"type": "text/plain", "value": ""}]
    body["subject"] = ""

    problems = validate_mail_body(body)

    expected = [
        "subject: must be a non-empty string",
        "content.1.value: must be a non-empty string",
        "content: text/plain must come first",
        "headers.From: reserved by SendGrid",
        "headers.X-Empty: must be a non-empty ASCII string",
        "headers.List-Unsubscribe: required",
        "headers.List-Unsubscribe-Post: required",
        "custom_args.nurture_send_id: must be a string, got int",
        "categories: at most 10, got 12",
        "categories: 'xxxxx",
    ]
    assert len(problems) == len(expected) + 1  # the custom_args size
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), prefix
    assert any(p.startswith("custom_args: 10") and "under 10000" in p for p in problems)


def test_sendgrid_validation_checks_addresses() -> None:
    body = build_mail_body(make_email(to="not-an-address"))
    assert validate_mail_body(body) == ["personalizations.0.to.0.email: not an email address"]
    transport = SendGridTransport("SG.a.b", host="http://127.0.0.1:9")
    with pytest.raises(PermanentSendError) as error:
        transport.send(make_email(to="not-an-address"))  # never reaches the network
    assert error.value.invalid_address


@pytest.mark.parametrize(
    ("sample", "status", "expected", "invalid_address"),
    [
        ("error_400_invalid_address.json", 400, PermanentSendError, True),
        ("error_400_from.json", 400, PermanentSendError, False),
        ("error_401.json", 401, AuthenticationError, False),
        ("error_403.json", 403, AuthenticationError, False),
        ("error_413.json", 413, PermanentSendError, False),
        ("error_429.json", 429, TransientSendError, None),
        ("error_500.json", 500, TransientSendError, None),
    ],
)
def test_sendgrid_error_bodies_map_to_send_errors(
    sample: str, status: int, expected: type[SendError], invalid_address: bool | None
) -> None:
    reply = Reply(status, {}, (DATA / "sendgrid" / sample).read_bytes())
    error = error_for_status(reply, now=0.0)
    assert type(error) is expected
    assert error.status == status
    if invalid_address is not None:
        assert isinstance(error, PermanentSendError)
        assert error.invalid_address is invalid_address


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"x-ratelimit-reset": "1000000042"}, 42.0),  # SendGrid: an epoch timestamp
        ({"x-ratelimit-reset": "1000000042.5"}, 42.5),
        ({"x-ratelimit-reset": "999999990"}, 0.0),  # already past
        ({"x-ratelimit-reset": "30"}, 30.0),  # a delay, as some proxies send
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "Sun, 09 Sep 2001 01:47:00 GMT", "x-ratelimit-reset": "1"}, 20.0),
        ({"x-ratelimit-reset": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_the_rate_limit_headers(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_seconds(headers, now=1_000_000_000.0) == seconds


def test_sendgrid_pool_tunnels_through_thehttps_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pooled path honours HTTPS_PROXY and NO_PROXY, as the official client's urllib does."""
    monkeypatch.setenv("HTTPS_PROXY", "http://anna:p%40ss@proxy.example.com:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example.com")
    assert https_proxy("api.sendgrid.com") == (
        "proxy.example.com",
        3128,
        {"Proxy-Authorization": "Basic " + base64.b64encode(b"anna:p@ss").decode()},
    )
    assert https_proxy("internal.example.com") is None


# -- SMTP -----------------------------------------------------------------------------


@pytest.fixture
def smtp_server() -> Iterator[FakeSMTPServer]:
    with FakeSMTPServer() as server:
        yield server


def smtp_transport(server: FakeSMTPServer, **options: Any) -> SMTPTransport:
    options.setdefault("timeout", 2.0)
    return SMTPTransport("127.0.0.1", server.port, **options)


def test_smtp_sends_the_message(smtp_server: FakeSMTPServer) -> None:
    transport = smtp_transport(smtp_server)
    email = make_email(text="Hej!\n.En rad som börjar med punkt.\n")

    result = transport.send(email)

    ((sender, recipients, options, data),) = smtp_server.messages
    assert (sender, recipients) == ("anna@example.com", ["bo@example.org"])
    assert options == ["BODY=8BITMIME"]  # RFC 6152, as the server offers it
    received = parse(data)
    assert received["Subject"] == "Välkommen – första steget"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert text_of(received) == "Hej!\n.En rad som börjar med punkt.\n"  # dot-stuffed
    assert result.provider == "smtp"
    assert result.message_id == "<send-1@nurture.example.com>"
    assert result.raw["reply"] == "250 2.0.0 Ok: queued as Q1"
    transport.close()


def test_smtp_sends_a_composed_email(smtp_server: FakeSMTPServer) -> None:
    result = smtp_transport(smtp_server).send(make_composed())
    ((sender, recipients, _, data),) = smtp_server.messages
    assert (sender, recipients) == ("anna@example.com", ["bo@example.org"])
    received = parse(data)
    assert received["Subject"] == "Välkommen – första steget"
    assert text_of(received) == "Hej Bo!\n\nVälkommen.\n"
    assert result.message_id == "<send-1.welcome@example.com>"


def test_smtp_without_8bitmime_sends_7bit(smtp_server: FakeSMTPServer) -> None:
    smtp_server.extensions = []
    smtp_transport(smtp_server).send(make_email())
    ((_, _, options, data),) = smtp_server.messages
    assert options == []
    assert data.isascii()
    assert text_of(parse(data)) == "Hej Bo!\n\nVälkommen.\n"


def test_smtp_reuses_connections(smtp_server: FakeSMTPServer) -> None:
    transport = smtp_transport(smtp_server)
    for index in range(5):
        transport.send(make_email(send_id=f"s{index}"))
    assert len(smtp_server.messages) == 5
    assert smtp_server.connections == 1


def test_smtp_replaces_a_connection_the_server_closed(smtp_server: FakeSMTPServer) -> None:
    smtp_server.close_after_message = True
    transport = smtp_transport(smtp_server)
    transport.send(make_email(send_id="a"))
    assert smtp_server.wait_for_hangups(1)  # the pooled connection is dead now
    transport.send(make_email(send_id="b"))
    assert len(smtp_server.messages) == 2
    assert smtp_server.connections == 2


def test_smtp_logs_in(smtp_server: FakeSMTPServer) -> None:
    smtp_server.credentials = ("anna", "hemligt")
    smtp_transport(smtp_server, username="anna", password="hemligt").send(make_email())
    assert len(smtp_server.messages) == 1


def test_smtp_wrong_password_stops_without_showing_it(smtp_server: FakeSMTPServer) -> None:
    smtp_server.credentials = ("anna", "hemligt")
    transport = smtp_transport(smtp_server, username="anna", password="fel-losenord")
    with pytest.raises(AuthenticationError) as error:
        transport.send(make_email())
    assert "NURTURE_SMTP_PASSWORD" in str(error.value)
    assert "fel-losenord" not in str(error.value)


def test_smtp_keeps_the_connection_after_a_refused_recipient(
    smtp_server: FakeSMTPServer,
) -> None:
    smtp_server.refuse_rcpt["nobody@example.org"] = "550 5.1.1 User unknown"
    transport = smtp_transport(smtp_server)
    with pytest.raises(PermanentSendError) as error:
        transport.send(make_email(to="nobody@example.org"))
    assert error.value.invalid_address
    assert error.value.status == 550
    transport.send(make_email())
    assert smtp_server.connections == 1


def test_smtp_sends_from_many_threads_within_the_pool_size(
    smtp_server: FakeSMTPServer,
) -> None:
    transport = smtp_transport(smtp_server, max_connections=3)
    emails = [make_email(send_id=f"s{i}") for i in range(60)]
    send_from_threads(transport, emails, 12)
    assert len(smtp_server.messages) == 60
    assert smtp_server.most_open <= 3


SMTP_FAILURES: list[tuple[str, dict[str, Any], type[SendError], bool]] = [
    # (case, server setup, expected error, invalid_address)
    ("recipient unknown", {"refuse_rcpt": {"bo@example.org": "550 5.1.1 No such user"}},
     PermanentSendError, True),
    ("recipient deferred", {"refuse_rcpt": {"bo@example.org": "450 4.2.1 Mailbox busy"}},
     TransientSendError, False),
    ("sender refused", {"on_mail": ["553 5.7.1 Sender rejected"]}, PermanentSendError, False),
    ("closing down", {"on_mail": ["421 4.3.2 Shutting down"]}, TransientSendError, False),
    ("deferred after data", {"after_data": ["451 4.3.0 Try again later"]},
     TransientSendError, False),
    ("refused after data", {"after_data": ["554 5.7.1 Spam"]}, PermanentSendError, False),
    ("timeout after data", {"after_data": ["hang"]}, AmbiguousSendError, False),
    ("dropped after data", {"after_data": ["drop"]}, AmbiguousSendError, False),
    ("dropped before data", {"on_mail": ["drop"]}, TransientSendError, False),
    ("greeting refused", {"greeting": "554 5.3.2 No service"}, AuthenticationError, False),
    ("starttls missing", {"_options": {"starttls": True}}, AuthenticationError, False),
    ("login refused", {"credentials": ("anna", "x"), "_options": {"username": "anna",
     "password": "y"}}, AuthenticationError, False),
    ("connection refused", {"_refused": True}, TransientSendError, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("setup", "expected", "invalid_address"),
    [case[1:] for case in SMTP_FAILURES],
    ids=[case[0] for case in SMTP_FAILURES],
)
def test_smtp_failures_become_send_errors(
    smtp_server: FakeSMTPServer,
    setup: dict[str, Any],
    expected: type[SendError],
    invalid_address: bool,
) -> None:
    """Every failure is a nurture SendError of the right kind; nothing lower escapes."""
    options: dict[str, Any] = {"timeout": 0.3, **setup.get("_options", {})}
    for name, value in setup.items():
        if not name.startswith("_"):
            setattr(smtp_server, name, deque(value) if isinstance(value, list) else value)
    port = closed_port() if setup.get("_refused") else smtp_server.port
    transport = SMTPTransport("127.0.0.1", port, **options)

    started = time.monotonic()
    with pytest.raises(SendError) as error:
        transport.send(make_email())

    assert type(error.value) is expected, error.value
    assert error.value.__cause__ is not None  # translated with raise ... from
    if isinstance(error.value, PermanentSendError):
        assert error.value.invalid_address is invalid_address
    assert time.monotonic() - started < 2.0
    transport.close()


def test_smtp_after_close_is_transient(smtp_server: FakeSMTPServer) -> None:
    transport = smtp_transport(smtp_server)
    transport.close()
    with pytest.raises(TransientSendError):
        transport.send(make_email())


def test_smtp_settings_that_exclude_each_other() -> None:
    with pytest.raises(ConfigurationError, match="NURTURE_SMTP_SSL"):
        SMTPTransport(starttls=True, ssl=True)
    with pytest.raises(ConfigurationError, match="NURTURE_SMTP_PASSWORD"):
        SMTPTransport(username="anna")
    # smtplib sends AUTH in ASCII; say so at start-up rather than fail every send.
    with pytest.raises(ConfigurationError, match="ASCII"):
        SMTPTransport(username="anna", password="lösenord")
