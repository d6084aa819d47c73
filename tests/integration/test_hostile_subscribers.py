"""Generated hostile subscriber data through the entry points that take it
(the ingest API, a CSV import, the sign-up form): never template code, never
a raw header, never a failed batch for anyone else.

Each example adds one hostile subscriber and two ordinary ones through one
entry point, then runs the real dispatcher. The hostile values combine
template syntax that would print ``PWNED`` if it were ever evaluated, CR/LF
header injection, NUL and other control characters, right-to-left marks and
emoji, a unicode domain, and (sometimes) a megabyte-long string.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from nurture.app.clock import FixedClock
from nurture.app.runtime import Runtime, build_runtime
from nurture.audience.csv_import import import_csv
from nurture.audience.tokens import create_token
from nurture.store.db import session_factory
from nurture.store.tables import SendRow, SubscriberRow
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from tests.admin_kit import NOW
from tests.factories import example_workdir

PIECES = [
    '{{ "PW" ~ "NED" }}',
    "{% if true %}PW{{ 'NED' }}{% endif %}",
    "{{ subscriber.__class__.__mro__ }}",
    "{% for x in range(10**9) %}x{% endfor %}",
    "\r\nBcc: victim@example.com",
    "\nSubject: spoofed",
    "\x00",
    "\x1b[31m",
    "\u202eevil\u202c",
    "\u200b",
    "🎉👍🏽",
    "مرحبا",
    "Ölçü",
    '"quoted", comma',
    "<script>alert(1)</script>",
    "=cmd|' /C calc'!A0",
]

hostile = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(max_size=20)), min_size=1, max_size=5
).map("".join)


@dataclass
class World:
    runtime: Runtime
    transport: MemoryTransport
    engine: Engine
    client: TestClient
    token: str
    folder: Path
    numbers: Iterator[int]


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[World]:
    transport = MemoryTransport()
    runtime = build_runtime(
        example_workdir(tmp_path), FixedClock(NOW), transport=transport, engine=engine,
        migrate=False,
    )  # fmt: skip
    with session_factory(engine)() as session:
        token = create_token(session, "site", "ingest", NOW).token
        session.commit()
    client = TestClient(create_app(runtime), raise_server_exceptions=False)
    yield World(runtime, transport, engine, client, token, tmp_path, itertools.count())
    runtime.dispatcher.close()


def _via_api(world: World, address: str, name: str, value: str) -> None:
    body = {
        "email": address,
        "name": name,
        "first_name": name,
        "tags": ["b2b"],
        "attributes": {"company": value},
        "consent": {"source": "api", "text": "yes"},
        "confirmed": True,
    }
    answer = world.client.post(
        "/api/v1/subscribers",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {world.token}"},
    )
    assert answer.status_code in (200, 201, 413, 422), answer.text[:300]


def _via_csv(world: World, rows: list[tuple[str, str, str]]) -> None:
    path = world.folder / f"import-{next(world.numbers)}.csv"
    import csv

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "first_name", "tags", "company"])
        for address, name, value in rows:
            writer.writerow([address, name, name, "b2b", value])
    with Session(world.engine) as session:
        import_csv(session, path, sequences=world.runtime.registry.sequences(), now=NOW)
        session.commit()


def _via_form(world: World, address: str, name: str) -> None:
    answer = world.client.post(
        "/subscribe",
        data={"email": address, "name": name, "tags": "b2b"},
        headers={"X-Forwarded-For": f"198.51.100.{next(world.numbers) % 250}"},
    )
    assert answer.status_code < 500, answer.text[:300]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=hostile,
    value=hostile,
    domain=st.sampled_from(["example.com", "exämple.se", "例え.jp"]),
    entry=st.sampled_from(["api", "csv", "form"]),
    huge=st.booleans(),
)
def test_hostile_values_never_run_never_inject_never_fail_others(
    world: World, name: str, value: str, domain: str, entry: str, huge: bool
) -> None:
    n = next(world.numbers)
    if huge and n % 4 == 0:
        value = value + "x" * 1_000_000
    hostile_address = f"h{n}@{domain}"
    others = [f"a{n}@example.com", f"b{n}@example.com"]
    world.transport.sent.clear()
    if entry == "api":
        _via_api(world, hostile_address, name, value)
        for address in others:
            _via_api(world, address, "Ordinary", "Doe AB")
    elif entry == "csv":
        rows = [(hostile_address, name, value)] + [(a, "Ordinary", "Doe AB") for a in others]
        _via_csv(world, rows)
    else:
        _via_form(world, hostile_address, name)
        return  # the form makes unconfirmed subscribers: nothing is sent yet
    world.runtime.dispatcher.dispatch(NOW)
    got = {sent.to_email for sent in world.transport.sent}
    assert set(others) <= got, "a hostile row failed the batch for ordinary subscribers"
    for sent in world.transport.sent:
        raw = sent.raw_bytes(utf8=True)
        assert b"PWNED" not in raw, "template code in subscriber data was evaluated"
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed.get_all("Bcc") is None
        assert len(parsed.get_all("Subject") or []) == 1
        for header, header_value in parsed.items():
            assert not any(c in str(header_value) for c in "\r\n\x00"), header
    with Session(world.engine) as session:
        failed = session.exec(select(SendRow).where(SendRow.status == "failed")).all()  # type: ignore[call-overload]
        stored = session.exec(select(SubscriberRow.email)).all()  # type: ignore[call-overload]
    assert not [row for row in failed if row.subscriber_id is None]
    assert all("\r" not in str(address) for address in stored)
