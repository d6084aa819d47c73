"""The contract of :mod:`nurture.transports.base`, one suite run against every transport.

Outbox writes to ``tmp_path``, SMTP talks to the fake server of
``tests/transport_kit.py``, SendGrid (both its pooled path and the official
client's) to :class:`~nurture.testing.FakeSendGrid`, and the memory transport
stands in for them in the dispatcher's tests, so it must keep the same promises.

Each failure is caused where it really happens (a file in the way of the
outbox folder, a server that hangs up or goes quiet), never by patching the
transport; whatever the lower layer raises must come out of ``send`` as a
nurture :class:`SendError`, translated with ``raise ... from``.
"""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path

import pytest

from nurture.errors import AmbiguousSendError, PermanentSendError, SendError, TransientSendError
from nurture.testing import FakeSendGrid, MemoryTransport
from nurture.transports import known_transports
from nurture.transports.base import BaseTransport, OutgoingEmail, SendResult, Transport
from nurture.transports.outbox import OutboxTransport
from nurture.transports.sendgrid import SendGridTransport
from nurture.transports.smtp import SMTPTransport
from tests.transport_kit import (
    FakeSMTPServer,
    make_composed,
    make_email,
    parse,
    send_from_threads,
)

API_KEY = "SG.contract-test.key"
TIMEOUT = 0.5
SUBJECT = "Välkommen – första steget"

Arrived = list[tuple[str, str]]
"""(recipient, subject) of each email the far side received, in order."""


@dataclass
class Case:
    transport: Transport
    arrived: Callable[[], Arrived]
    failures: dict[str, Callable[[], None]] = field(default_factory=dict)
    """Ways to break the layer under the transport, by kind (see FAILURES)."""


FAILURES: dict[str, type[SendError]] = {
    # nothing was handed over: the connection (or the disk) failed first
    "refused": TransientSendError,
    # the whole request went out, then the connection dropped without an answer
    "lost": AmbiguousSendError,
    # the whole request went out, then no answer came within the timeout
    "timeout": AmbiguousSendError,
}
SUPPORTED: dict[str, list[str]] = {
    # A local write completes or fails; it has no answer to lose.
    "outbox": ["refused"],
    "smtp": ["refused", "lost", "timeout"],
    "sendgrid-pooled": ["refused", "lost", "timeout"],
    "sendgrid-official": ["refused", "lost", "timeout"],
    # The memory transport imitates the first two through its failure plan.
    "memory": ["refused", "lost"],
}
NAMES = list(SUPPORTED)


def outbox_case(tmp_path: Path) -> Iterator[Case]:
    folder = tmp_path / "outbox"  # created on the first send

    def arrived() -> Arrived:
        messages = [parse(path.read_bytes()) for path in sorted(folder.glob("*.eml"))]
        return [(getaddresses([str(m["To"])])[0][1], str(m["Subject"])) for m in messages]

    def refused() -> None:
        folder.write_text("a file where the folder should be")

    transport = OutboxTransport(folder)
    yield Case(transport, arrived, {"refused": refused})
    transport.close()


def smtp_case() -> Iterator[Case]:
    with FakeSMTPServer() as server:

        def arrived() -> Arrived:
            with server.lock:
                return [
                    (rcpts[0], str(parse(data)["Subject"])) for _, rcpts, _, data in server.messages
                ]

        failures = {
            "refused": lambda: server.on_mail.append("drop"),
            "lost": lambda: server.after_data.append("drop"),
            "timeout": lambda: server.after_data.append("hang"),
        }
        transport = SMTPTransport("127.0.0.1", server.port, timeout=TIMEOUT)
        yield Case(transport, arrived, failures)
        transport.close()


def sendgrid_case(*, pooled: bool) -> Iterator[Case]:
    with FakeSendGrid(api_key=API_KEY) as fake:

        def arrived() -> Arrived:
            return [
                (body["personalizations"][0]["to"][0]["email"], body["subject"])
                for body in fake.delivered
            ]

        failures = {
            "refused": fake.stop,  # nothing listens on the port any more
            "lost": lambda: fake.enqueue("drop"),
            "timeout": lambda: fake.enqueue("hang", seconds=5.0),
        }
        transport = SendGridTransport(API_KEY, host=fake.url, timeout=TIMEOUT, pooled=pooled)
        yield Case(transport, arrived, failures)
        transport.close()


def memory_case() -> Iterator[Case]:
    memory = MemoryTransport()

    def arrived() -> Arrived:
        return [(email.to_email, email.header("Subject") or "") for email in memory.sent]

    failures = {
        "refused": lambda: memory.fail_next(TransientSendError("connection refused")),
        "lost": lambda: memory.accept_then_raise(AmbiguousSendError("connection dropped")),
    }
    yield Case(memory, arrived, failures)
    memory.close()


@pytest.fixture
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    name = request.param
    builders: dict[str, Callable[[], Iterator[Case]]] = {
        "outbox": lambda: outbox_case(tmp_path),
        "smtp": smtp_case,
        "sendgrid-pooled": lambda: sendgrid_case(pooled=True),
        "sendgrid-official": lambda: sendgrid_case(pooled=False),
        "memory": memory_case,
    }
    yield from builders[name]()


every_transport = pytest.mark.parametrize("case", NAMES, indirect=True)


@every_transport
def test_is_a_registered_transport(case: Case) -> None:
    assert isinstance(case.transport, Transport)
    assert case.transport.name in known_transports()


@every_transport
def test_send_returns_a_result_and_the_email_arrives(case: Case) -> None:
    result = case.transport.send(make_email(to="bo@example.org"))

    assert isinstance(result, SendResult)
    assert result.provider == case.transport.name
    assert result.message_id
    assert case.arrived() == [("bo@example.org", SUBJECT)]


@every_transport
def test_a_composed_email_arrives(case: Case) -> None:
    """What the dispatcher passes: a ComposedEmail rather than an EmailMessage."""
    result = case.transport.send(make_composed(to="cecilia@example.org"))
    assert result.message_id
    assert case.arrived() == [("cecilia@example.org", SUBJECT)]


@every_transport
def test_close_is_idempotent_and_later_sends_are_transient(case: Case) -> None:
    case.transport.send(make_email(send_id="before"))
    case.transport.close()
    case.transport.close()

    with pytest.raises(TransientSendError, match="closed"):
        case.transport.send(make_email(send_id="after"))
    assert len(case.arrived()) == 1


@every_transport
def test_sends_from_many_threads_at_once(case: Case) -> None:
    emails = [make_email(send_id=f"s{i}", to=f"bo{i}@example.org") for i in range(48)]

    results = send_from_threads(case.transport, emails, 12)

    assert len(results) == 48
    assert len({r.message_id for r in results}) == 48
    assert sorted(to for to, _ in case.arrived()) == sorted(e.to_email for e in emails)


@pytest.mark.parametrize(
    ("case", "kind"),
    [(name, kind) for name, kinds in SUPPORTED.items() for kind in kinds],
    indirect=["case"],
)
def test_a_failure_below_the_transport_is_a_send_error(case: Case, kind: str) -> None:
    """No lower-level exception (OSError, smtplib, http.client, urllib, ssl) escapes."""
    case.failures[kind]()

    # pytest.raises(SendError) lets any other exception through: the test fails.
    with pytest.raises(SendError) as raised:
        case.transport.send(make_email(send_id="broken"))

    assert type(raised.value) is FAILURES[kind], raised.value
    if not isinstance(case.transport, MemoryTransport):  # the memory plan has no lower layer
        cause = raised.value.__cause__
        assert cause is not None and not isinstance(cause, SendError), repr(cause)
    if kind == "refused":
        assert case.arrived() == []


@pytest.mark.parametrize(
    ("case", "kind"),
    [(name, kind) for name, kinds in SUPPORTED.items() for kind in kinds if kind != "refused"],
    indirect=["case"],
)
def test_the_transport_recovers_after_a_lost_answer(case: Case, kind: str) -> None:
    case.failures[kind]()
    with pytest.raises(AmbiguousSendError):
        case.transport.send(make_email(send_id="lost"))

    result = case.transport.send(make_email(send_id="next", to="next@example.org"))

    assert result.message_id
    assert ("next@example.org", SUBJECT) in case.arrived()


@pytest.mark.parametrize(
    ("case", "kind"),
    [(name, kind) for name, kinds in SUPPORTED.items() for kind in [None, *kinds]],
    indirect=["case"],
)
def test_submit_hands_over_once_what_send_returns_or_raises(case: Case, kind: str | None) -> None:
    """The dispatcher's way in for a multiplexed transport: the same outcomes
    as ``send``, handed to ``done`` exactly once (from the transport's own
    thread for the pooled SendGrid transport, before returning for the others)."""
    transport = case.transport
    assert isinstance(transport, BaseTransport)
    if kind is not None:
        case.failures[kind]()
    outcomes: list[SendResult | Exception] = []
    answered = threading.Event()

    def done(outcome: SendResult | Exception) -> None:
        outcomes.append(outcome)
        answered.set()

    transport.submit(make_email(send_id="submitted", to="sub@example.org"), done)
    assert answered.wait(10)
    transport.close()  # anything still in flight ends (and would be counted) first
    [outcome] = outcomes
    if kind is None:
        assert isinstance(outcome, SendResult) and outcome.message_id
        assert case.arrived() == [("sub@example.org", SUBJECT)]
        return
    assert type(outcome) is FAILURES[kind], outcome
    if not isinstance(transport, MemoryTransport):
        cause = outcome.__cause__
        assert cause is not None and not isinstance(cause, SendError), repr(cause)


def test_every_transport_is_in_the_contract() -> None:
    """A new built-in transport joins the cases above."""
    covered = {name.split("-")[0] for name in NAMES}
    assert covered == set(known_transports())


def test_send_takes_an_outgoing_email() -> None:
    """The cases' emails are what the dispatcher hands over (guards the kit)."""
    assert isinstance(make_email(), OutgoingEmail)
    assert isinstance(make_composed(), OutgoingEmail)


# -- internationalised addresses ------------------------------------------------

UNICODE_LOCAL = "jörg@example.com"
UNICODE_DOMAIN = "anna@exämple.se"
# What each transport delivers the address as; None: refused as a PermanentSendError
# (the README's table). A Unicode domain always goes out IDNA-encoded; only
# SMTPUTF8 (SMTP when offered, the outbox's UTF-8 file) carries a Unicode local part.
INTERNATIONAL: dict[str, dict[str, str | None]] = {
    "outbox": {UNICODE_LOCAL: UNICODE_LOCAL, UNICODE_DOMAIN: "anna@xn--exmple-cua.se"},
    "smtp": {UNICODE_LOCAL: UNICODE_LOCAL, UNICODE_DOMAIN: "anna@xn--exmple-cua.se"},
    "sendgrid-pooled": {UNICODE_LOCAL: None, UNICODE_DOMAIN: "anna@xn--exmple-cua.se"},
    "sendgrid-official": {UNICODE_LOCAL: None, UNICODE_DOMAIN: "anna@xn--exmple-cua.se"},
    "memory": {UNICODE_LOCAL: UNICODE_LOCAL, UNICODE_DOMAIN: UNICODE_DOMAIN},
}


@pytest.mark.parametrize("composed", [True, False], ids=["composed", "message"])
@pytest.mark.parametrize("address", [UNICODE_LOCAL, UNICODE_DOMAIN])
@every_transport
def test_an_international_address_goes_out_or_fails_as_a_permanent_error(
    case: Case, address: str, composed: bool, request: pytest.FixtureRequest
) -> None:
    """Never a raw exception (the outbox used to raise ValueError); never the batch."""
    name = request.node.callspec.params["case"]
    expected = INTERNATIONAL[name][address]
    if name == "outbox" and not composed and address == UNICODE_DOMAIN:
        # The email package writes a Unicode domain as UTF-8 (RFC 6532), not in
        # A-labels; the dispatcher's ComposedEmail gives A-labels.
        expected = UNICODE_DOMAIN
    build = make_composed if composed else make_email

    if expected is None:
        with pytest.raises(PermanentSendError) as refused:
            case.transport.send(build(send_id="intl", to=address))
        assert address in str(refused.value) and "non-ASCII" in str(refused.value)
        assert case.arrived() == []
    else:
        case.transport.send(build(send_id="intl", to=address))
        assert case.arrived() == [(expected, SUBJECT)]

    # The transport is fine for the next subscriber.
    case.transport.send(build(send_id="next", to="next@example.org"))
    assert ("next@example.org", SUBJECT) in case.arrived()


def test_smtp_without_smtputf8_refuses_only_that_email() -> None:
    with FakeSMTPServer() as server:
        server.extensions = ["8BITMIME"]
        transport = SMTPTransport("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            with pytest.raises(PermanentSendError, match="does not offer SMTPUTF8") as refused:
                transport.send(make_composed(send_id="jorg", to=UNICODE_LOCAL))
            assert UNICODE_LOCAL in str(refused.value)
            # A Unicode domain needs no extension: its A-labels are ASCII.
            transport.send(make_composed(send_id="anna", to=UNICODE_DOMAIN))
            transport.send(make_composed(send_id="bo", to="bo@example.org"))
        finally:
            transport.close()
        with server.lock:
            delivered = [(rcpts, options) for _, rcpts, options, _ in server.messages]
        assert delivered == [
            (["anna@xn--exmple-cua.se"], ["BODY=8BITMIME"]),
            (["bo@example.org"], ["BODY=8BITMIME"]),
        ]
        assert server.connections == 1  # the refusal kept the session


def test_smtp_uses_smtputf8_only_for_a_unicode_local_part() -> None:
    with FakeSMTPServer() as server:
        transport = SMTPTransport("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            transport.send(make_composed(send_id="jorg", to=UNICODE_LOCAL))
            transport.send(make_composed(send_id="anna", to=UNICODE_DOMAIN))
        finally:
            transport.close()
        with server.lock:
            (_, _, first, data), (_, _, second, _) = server.messages
    assert "SMTPUTF8" in first and "SMTPUTF8" not in second
    # RFC 6532: the header is UTF-8 (BytesParser would read it as ASCII).
    message = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == UNICODE_LOCAL
