"""Poison rows: one subscriber's bad data costs that subscriber's email, never
the batch, and never the next pass.

1,000 normal subscribers and a handful of hostile ones are written straight
into the tables, past input validation, as an older version of nurture or
another tool could have left them: an attribute of 130,000 characters used in
the subject, a NUL byte, a CR/LF in the name, an address with a non-ASCII local
part, a name that looks like Jinja. They are due first, so they sit in the
first batch. One pass goes through the in-memory transport and the real
SendGrid transport (against the fake). Then:

* 999+ of the normal emails went out in that first pass;
* each hostile email is ``failed`` with a reason naming the field, or sent
  with the value made harmless (no CR/LF or NUL in a header, ``{{ 7*7 }}``
  printed as written);
* a second pass is not stuck on them: nothing is due again, nothing new sent.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.app.settings import Settings
from nurture.core.rendering import ComposedEmail
from nurture.store.tables import EnrollmentRow, SendRow, SubscriberRow
from nurture.testing import MemoryTransport
from nurture.testing.fake_sendgrid import FakeSendGrid
from nurture.transports.base import OutgoingEmail
from tests.factories import POSTAL_ADDRESS, sequence_dict

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # a Tuesday morning
NORMAL = 1_000
API_KEY = "SG.poison-test-key.not-a-real-one"
SUBSCRIBER = SubscriberRow.__table__  # type: ignore[attr-defined]
ENROLLMENT = EnrollmentRow.__table__  # type: ignore[attr-defined]
SEND = SendRow.__table__  # type: ignore[attr-defined]
SUBJECT = "{{ subscriber.name }} at {{ subscriber.attributes.company }}"
LONG = "x" * 130_000


@dataclass(frozen=True)
class Hostile:
    """A subscriber with one bad value, and the words a failure's reason may
    use to name the field it came from."""

    label: str
    email: str
    name: str
    company: str
    fields: tuple[str, ...]


def hostile_subscribers(dialect: str) -> list[Hostile]:
    found = [
        Hostile("long", "long@example.com", "Long Company", LONG, ("subject", "company")),
        Hostile("nul-attribute", "nul@example.com", "Nul Company", "Acme\x00Corp",
                ("company", "subject", "nul")),
        Hostile("crlf", "crlf@example.com", "Eve\r\nBcc: everyone@example.com", "Acme",
                ("name",)),
        Hostile("non-ascii", "jörg@example.com", "Jörg", "Acme", ("address", "email")),
        Hostile("jinja", "jinja@example.com", "{{ 7*7 }}", "Acme", ()),
    ]  # fmt: skip
    if dialect == "sqlite":
        # PostgreSQL text cannot hold a NUL at all, so only SQLite can have
        # one in a column; the JSON attribute above carries it on both.
        found.append(Hostile("nul-name", "nulname@example.com", "Nul\x00Name", "Acme", ("name",)))
    return found


def write_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A one-sequence folder: ``welcome`` (due at once, the subject reads the
    name and an attribute) then the offer two days later."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    steps = sequence_dict()["steps"]
    steps[0]["subject"] = SUBJECT
    sequences = tmp_path / "sequences"
    sequences.mkdir()
    definition = sequence_dict(id="poison", timezone="UTC", steps=steps)
    (sequences / "poison.yaml").write_text(json.dumps(definition), encoding="utf-8")
    return sequences, templates


def make_runtime(
    engine: Engine, tmp_path: Path, sender: MemoryTransport | None, **overrides: object
) -> Runtime:
    sequences, templates = write_folder(tmp_path)
    values: dict[str, Any] = {
        "sequences_dir": sequences,
        "templates_dir": templates,
        "outbox_dir": tmp_path / "outbox",
        "secret_key": "poison-test-secret-not-a-placeholder",
        "rate_limit": 100_000.0,
        "batch_size": 250,
        "send_concurrency": 4,
        "transport": "memory",
    }
    values.update(overrides)
    return build_runtime(
        Settings(**values), FixedClock(NOW), transport=sender, engine=engine, migrate=False
    )


def insert_audience(runtime: Runtime, hostile: list[Hostile]) -> None:
    """Straight into the tables: nothing checks these values on the way in."""
    version = runtime.registry.sequences()["poison"].version
    people = [(h.email, h.name, h.company) for h in hostile] + [
        (f"person{i:04d}@example.com", f"Person {i}", f"Company {i}") for i in range(NORMAL)
    ]
    with runtime.engine.begin() as conn:
        for index, (email, name, company) in enumerate(people):
            subscriber_id = conn.execute(
                insert(SUBSCRIBER)
                .values(
                    email=email, name=name, first_name=name.split(" ")[0], locale="en",
                    timezone="UTC", tags=[], attributes={"company": company},
                    status="active", created_at=NOW, updated_at=NOW,
                )
                .returning(SUBSCRIBER.c.id)
            ).scalar_one()  # fmt: skip
            # The hostile ones are due first: they land in the first batch.
            due = NOW - timedelta(hours=1) + timedelta(milliseconds=index)
            conn.execute(
                insert(ENROLLMENT).values(
                    subscriber_id=subscriber_id, sequence_id="poison", sequence_version=version,
                    status="active", enrolled_at=due, next_due_at=due, updated_at=NOW,
                )
            )  # fmt: skip


@dataclass(frozen=True)
class Sent:
    """What the provider got for one email: the parts a value could poison."""

    email: str
    subject: str
    to_name: str


def welcome_rows(engine: Engine) -> dict[str, tuple[str, str]]:
    """email -> (status, reason) of each subscriber's ``welcome`` ledger row."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(SUBSCRIBER.c.email, SEND.c.status, SEND.c.reason)
            .join(SEND, SEND.c.subscriber_id == SUBSCRIBER.c.id)
            .where(SEND.c.step_id == "welcome")
        )
        return {row.email: (row.status, row.reason or "") for row in rows}


def due_at(engine: Engine, moment: datetime) -> int:
    with engine.connect() as conn:
        rows = conn.execute(
            select(ENROLLMENT.c.id).where(
                ENROLLMENT.c.status == "active", ENROLLMENT.c.next_due_at <= moment
            )
        )
        return len(rows.all())


def check_poison(
    runtime: Runtime, hostile: list[Hostile], first: list[Sent], total_after_second: int
) -> None:
    engine = runtime.engine
    ledger = welcome_rows(engine)
    normal_sent = [
        s for s in first if s.email.startswith("person") and ledger.get(s.email, ("",))[0] == "sent"
    ]
    assert len(normal_sent) >= NORMAL - 1, (
        f"{len(normal_sent)} of {NORMAL} normal emails in the first pass; ledger: "
        f"{sorted({status for status, _ in ledger.values()})}"
    )
    by_email = {s.email: s for s in first}
    problems: list[str] = []  # every hostile row is judged, then all are reported
    for bad in hostile:
        status, reason = ledger.get(bad.email, ("missing", ""))
        sent = by_email.get(bad.email)
        if status == "failed":
            if not bad.fields or not any(word in reason.lower() for word in bad.fields):
                problems.append(f"{bad.label}: failed, not naming {bad.fields}: {reason[:200]!r}")
            if LONG in reason:
                problems.append(f"{bad.label}: the whole value was copied into the reason")
            continue
        if status != "sent" or sent is None:
            problems.append(f"{bad.label}: {status}, {reason[:200]!r}")
            continue
        for part in (sent.subject, sent.to_name):
            if set(part) & {"\r", "\n", "\x00"}:
                problems.append(f"{bad.label}: sent with a control character: {part[:80]!r}")
        if bad.label == "jinja" and sent.subject != "{{ 7*7 }} at Acme":
            problems.append(f"{bad.label}: subject {sent.subject!r}")
    assert not problems, "\n".join(problems)
    # The second pass: nothing due again, nothing sent again.
    assert due_at(engine, NOW) == 0
    assert total_after_second == len(first)


def sent_parts(email: OutgoingEmail) -> Sent:
    message = email.message
    if isinstance(message, ComposedEmail):
        return Sent(email.to_email, message.subject, message.to_name)
    return Sent(email.to_email, str(message["Subject"]), str(message["To"]))


@pytest.fixture
def memory_runtime(engine: Engine, tmp_path: Path) -> Iterator[tuple[Runtime, MemoryTransport]]:
    transport = MemoryTransport()
    runtime = make_runtime(engine, tmp_path, transport)
    yield runtime, transport
    runtime.dispatcher.close()


def test_poison_rows_through_the_memory_transport(
    memory_runtime: tuple[Runtime, MemoryTransport],
) -> None:
    runtime, transport = memory_runtime
    hostile = hostile_subscribers(runtime.engine.dialect.name)
    insert_audience(runtime, hostile)

    def sent() -> list[Sent]:
        return [sent_parts(e) for e in transport.sent]

    runtime.dispatcher.dispatch(NOW)
    first = sent()
    runtime.dispatcher.dispatch(NOW)
    check_poison(runtime, hostile, first, len(sent()))


def test_poison_rows_through_sendgrid(engine: Engine, tmp_path: Path) -> None:
    with FakeSendGrid(api_key=API_KEY) as fake:
        runtime = make_runtime(
            engine,
            tmp_path,
            None,
            transport="sendgrid",
            base_url="https://mail.example.se",  # a real transport refuses localhost
            postal_address=POSTAL_ADDRESS,  # and the sample address
            sendgrid_api_key=API_KEY,
            sendgrid_api_host=fake.url,
            sendgrid_timeout=5.0,
        )
        try:
            hostile = hostile_subscribers(engine.dialect.name)
            insert_audience(runtime, hostile)

            def sent() -> list[Sent]:
                found = []
                for body in fake.delivered:
                    [to] = body["personalizations"][0]["to"]
                    found.append(Sent(to["email"], body["subject"], to.get("name", "")))
                return found

            runtime.dispatcher.dispatch(NOW)
            first = sent()
            runtime.dispatcher.dispatch(NOW)
            check_poison(runtime, hostile, first, len(sent()))
        finally:
            runtime.close()
