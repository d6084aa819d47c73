"""``nurture subscribers unsubscribe``: the leaving service from the command line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import typer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, select
from typer.testing import CliRunner

from nurture.app.settings import Settings
from nurture.audience.subscribers import add_subscriber, get_subscriber
from nurture.audience.suppression import is_suppressed
from nurture.cli.context import AppContext
from nurture.cli.subscribers import subscribers_app
from nurture.core.loader import LoadedSequence, parse_sequence
from nurture.core.vocabulary import EventKind, SubscriberStatus
from nurture.store.db import make_engine, session_factory
from nurture.store.tables import EnrollmentRow, EventRow
from tests.factories import sequence_dict

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _loaded(sequence_id: str) -> LoadedSequence:
    data = sequence_dict(id=sequence_id, trigger={"event": "subscribed"})
    loaded, problems = parse_sequence(json.dumps(data), f"{sequence_id}.yaml")
    assert loaded is not None, problems
    return loaded


@dataclass
class Context:
    url: str
    loaded: dict[str, LoadedSequence]

    def settings(self) -> Settings:
        return Settings(database_url=self.url)

    def now(self) -> datetime:
        return NOW

    def open_store(self) -> tuple[Engine, sessionmaker[Session]]:
        engine = make_engine(self.url)
        return engine, session_factory(engine)

    def sequences(self) -> dict[str, LoadedSequence]:
        return self.loaded


def _run(context: Context, *args: str) -> Any:
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = context

    root.add_typer(subscribers_app, name="subscribers")
    return CliRunner().invoke(root, list(args), catch_exceptions=False)


def _setup(engine: Engine) -> Context:
    sequences = {name: _loaded(name) for name in ("welcome", "tips")}
    with session_factory(engine)() as session:
        add_subscriber(
            session, email="karin@example.com", consent_source="test", now=NOW,
            sequences=sequences,
        )  # fmt: skip
        session.commit()
    context = Context(engine.url.render_as_string(hide_password=False), sequences)
    assert isinstance(context, AppContext)
    return context


def _state(engine: Engine) -> tuple[str, dict[str, str], bool, int]:
    with session_factory(engine)() as session:
        row = get_subscriber(session, "karin@example.com")
        assert row is not None
        query = select(EnrollmentRow).where(EnrollmentRow.subscriber_id == row.id)
        enrollments = {e.sequence_id: e.status for e in session.exec(query)}
        events = session.exec(select(EventRow).where(EventRow.kind == EventKind.UNSUBSCRIBED))
        return row.status, enrollments, is_suppressed(session, row.email), len(list(events))


def test_unsubscribe_from_one_sequence_then_from_all(engine: Engine) -> None:
    context = _setup(engine)

    result = _run(context, "subscribers", "unsubscribe", "Karin@Example.com", "--sequence", "tips")
    assert result.exit_code == 0, result.output
    assert "Unsubscribed karin@example.com from tips" in result.stdout
    assert _state(engine) == ("active", {"welcome": "active", "tips": "exited"}, False, 1)

    result = _run(context, "subscribers", "unsubscribe", "karin@example.com")
    assert result.exit_code == 0, result.output
    assert "from all email (ended: welcome)" in result.stdout
    assert _state(engine) == (
        SubscriberStatus.UNSUBSCRIBED,
        {"welcome": "exited", "tips": "exited"},
        True,
        2,
    )

    result = _run(context, "subscribers", "unsubscribe", "karin@example.com")
    assert "already unsubscribed: nothing changed" in result.stdout
    assert _state(engine)[3] == 2


def test_unsubscribing_an_unknown_address_fails(engine: Engine) -> None:
    result = _run(_setup(engine), "subscribers", "unsubscribe", "nobody@example.com")
    assert result.exit_code == 1
    assert "no subscriber 'nobody@example.com'" in result.stderr
