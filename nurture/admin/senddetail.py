"""One send in detail: the ledger row, the decision's reason and resolution,
the provider's events in order, and the email re-rendered.

The ledger keeps the subject but not the body. So the body shown is a
**re-rendering**: the step of the sequence version the send was decided on
(the file's current version when it is the same, else the definition stored
in ``sequence_version``), with today's templates, for the subscriber as they
are now, through the dispatcher's own composer — with click tracking and the
open pixel left out, so that looking at it records no click or open. When the
version is no longer stored, the step is gone or rendering fails, the detail
says why instead (:attr:`Rendering.problem`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import Engine

from nurture.admin.sendlog import LatestEvent, SendLine
from nurture.core.loader import LoadedSequence, Positions, sequence_from_definition
from nurture.core.model import Step
from nurture.core.rendering import ComposedEmail
from nurture.core.subscriber import Subscriber
from nurture.store import sendlog as store

__all__ = ["Compose", "Rendering", "SendDetail", "SentEvent", "send_detail"]

Compose = Callable[[LoadedSequence, Step, Subscriber, str, datetime], ComposedEmail]


@dataclass(frozen=True)
class SentEvent:
    """One event of the send, as the provider (or our tracking) reported it."""

    kind: str
    occurred_at: datetime
    received_at: datetime
    machine: bool
    user_agent: str | None
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "occurred_at": self.occurred_at.isoformat(),
            "received_at": self.received_at.isoformat(),
            "machine": self.machine,
            "user_agent": self.user_agent,
            "payload": self.payload,
        }


@dataclass(frozen=True)
class Rendering:
    """The re-rendered email, or why there is none (``problem``)."""

    version: str
    current: bool  # the version is the sequence file's current one
    headers: list[tuple[str, str]]
    subject: str
    text: str
    html: str
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "current_version": self.current,
            "problem": self.problem,
            "headers": [list(pair) for pair in self.headers],
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
        }


@dataclass(frozen=True)
class SendDetail:
    line: SendLine
    key: str
    sequence_version: str
    due_at: datetime
    next_attempt_at: datetime | None
    transport: str | None
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    events: list[SentEvent]
    rendering: Rendering

    def to_json(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            **self.line.to_json(),
            "key": self.key,
            "sequence_version": self.sequence_version,
            "due_at": iso(self.due_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "transport": self.transport,
            "resolution": self.resolution,
            "resolved_by": self.resolved_by,
            "resolved_at": iso(self.resolved_at),
            "events": [event.to_json() for event in self.events],
            "rendering": self.rendering.to_json(),
        }


def _failed(version: str, current: bool, problem: str) -> Rendering:
    return Rendering(version, current, [], "", "", "", problem)


def _loaded(
    engine: Engine, sequences: Mapping[str, LoadedSequence], sequence_id: str, version: str
) -> tuple[LoadedSequence | None, bool, str | None]:
    """The sequence as of ``version``, whether that is the file's current
    version, and why there is none."""
    current = sequences.get(sequence_id)
    if current is not None and current.version == version:
        return current, True, None
    with engine.connect() as conn:
        definition = store.stored_definition(conn, sequence_id, version)
    if definition is None:
        return None, False, f"version {version} of {sequence_id} is no longer stored"
    try:
        sequence = sequence_from_definition(definition)
    except ValidationError:
        return None, False, f"the stored version {version} of {sequence_id} can no longer be read"
    display = f"{sequence_id} (stored version {version})"
    return LoadedSequence(sequence, Path(display), display, Positions(None), version), False, None


def _render(
    engine: Engine,
    row: dict[str, Any],
    sequences: Mapping[str, LoadedSequence],
    compose: Compose,
) -> Rendering:
    version = row["sequence_version"]
    loaded, current, problem = _loaded(engine, sequences, row["sequence_id"], version)
    if loaded is None:
        return _failed(version, current, problem or "the sequence is gone")
    step = next((s for s in loaded.sequence.steps if s.id == row["step_id"]), None)
    if step is None:
        return _failed(version, current, f"step {row['step_id']} is not in version {version}")
    subscriber = Subscriber(
        email=row["email"],
        name=row["name"] or "",
        given_first_name=row["first_name"],
        locale=row["locale"],
        timezone=row["timezone"],
        tags=tuple(row["tags"] or ()),
        attributes=dict(row["attributes"] or {}),
        trigger_properties=dict(row["trigger_properties"] or {}),
    )
    try:
        email = compose(loaded, step, subscriber, row["key"], row["decided_at"])
    except Exception as exc:  # marketer templates may fail in any way: say how
        return _failed(version, current, f"it could not be rendered: {exc}")
    headers = [
        ("From", f"{email.sender_name} <{email.sender_email}>"),
        ("To", f"{email.to_name} <{email.to_email}>" if email.to_name else email.to_email),
    ]
    if email.reply_to:
        headers.append(("Reply-To", email.reply_to))
    headers += [
        ("Subject", email.subject),
        ("Message-ID", email.message_id),
        ("Date", email.date.isoformat()),
        *email.headers.items(),
    ]
    return Rendering(
        version, current, headers, email.subject, email.rendered.text, email.rendered.html
    )


def send_detail(
    engine: Engine,
    send_id: int,
    *,
    sequences: Mapping[str, LoadedSequence],
    compose: Compose,
) -> SendDetail | None:
    """Send ``send_id`` in detail, or None when there is no such send.
    ``compose`` should be the dispatcher's composer without tracking
    (:meth:`nurture.sending.composer.Composer.without_tracking`)."""
    with engine.connect() as conn:
        row = store.send_row(conn, send_id)
        if row is None:
            return None
        events = store.events_of(conn, send_id)
    kept = [
        SentEvent(
            e["kind"],
            e["occurred_at"],
            e["received_at"],
            bool(e["machine"]),
            e["user_agent"],
            e["payload"] if isinstance(e["payload"], dict) else {},
        )
        for e in events
    ]
    last = kept[-1] if kept else None
    latest = None if last is None else LatestEvent(last.kind, last.occurred_at, last.machine)
    line = SendLine.of(row, None)
    line = replace(line, latest_event=latest)
    return SendDetail(
        line=line,
        key=row["key"],
        sequence_version=row["sequence_version"],
        due_at=row["due_at"],
        next_attempt_at=row["next_attempt_at"],
        transport=row["transport"],
        resolution=row["resolution"],
        resolved_by=row["resolved_by"],
        resolved_at=row["resolved_at"],
        events=kept,
        rendering=_render(engine, row, sequences, compose),
    )
