"""The send log for admins: one line per ledger entry, with its latest event.

One service for ``/admin/sends`` (pages), ``/admin/api/sends`` (JSON), the CSV
export and ``nurture log``, over the queries of :mod:`nurture.store.sendlog`:

* :func:`parse_filter` turns what a person typed (an address in any case, a
  date or a time, in their zone) into a :class:`SendFilter`, or raises
  :class:`SendLogError` saying which value is wrong;
* :func:`read_page` answers one page and the opaque cursors of the pages
  around it (keyset pagination: every page costs the same);
* :func:`walk` yields every matching line in batches (the CSV export);
* :func:`recent` is what ``nurture log`` lists: the newest lines, with the
  confirmation emails of sign-up among them (``signup/confirmation``). The
  admin pages leave those out: they are not ledger rows and have no detail.

The detail of one send (with its re-rendering) is :mod:`nurture.admin.senddetail`.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from nurture.admin.users import admin_zone
from nurture.core.vocabulary import SendStatus
from nurture.store import sendlog as store
from nurture.store.ids import parse_id
from nurture.store.sendlog import Position, SendFilter

__all__ = [
    "MAX_LIMIT",
    "SEND_STATUSES",
    "LatestEvent",
    "SendFilter",
    "SendLine",
    "SendLogError",
    "SendPage",
    "csv_rows",
    "parse_filter",
    "parse_moment",
    "read_page",
    "recent",
    "walk",
]

MAX_LIMIT = 500
"""The most lines one page (or ``nurture log``) asks for at once."""

SEND_STATUSES = tuple(status.value for status in SendStatus)


class SendLogError(ValueError):
    """A filter or cursor that cannot be read; the message says which."""


@dataclass(frozen=True)
class LatestEvent:
    """The latest event of a send; ``machine``: a click or open most likely
    made by a link scanner, not a person."""

    kind: str
    at: datetime
    machine: bool

    @property
    def label(self) -> str:
        return f"{self.kind} (machine)" if self.machine else self.kind


@dataclass(frozen=True)
class SendLine:
    """One line of the send log. ``id`` is None for a confirmation email."""

    id: int | None
    decided_at: datetime
    sent_at: datetime | None
    status: str
    reason: str | None
    attempts: int
    email: str
    name: str
    sequence_id: str
    step_id: str
    subject: str | None
    provider_message_id: str | None
    latest_event: LatestEvent | None

    @classmethod
    def of(cls, row: dict[str, Any], event: dict[str, Any] | None) -> SendLine:
        return cls(
            id=None if row.get("confirmation") else row["id"],
            decided_at=row["decided_at"],
            sent_at=row.get("sent_at"),
            status=row["status"],
            reason=row.get("reason"),
            attempts=int(row.get("attempts") or 0),
            email=row["email"],
            name=row.get("name") or "",
            sequence_id=row["sequence_id"],
            step_id=row["step_id"],
            subject=row.get("subject"),
            provider_message_id=row.get("provider_message_id"),
            latest_event=None
            if event is None
            else LatestEvent(event["kind"], event["occurred_at"], event["machine"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``/admin/api/sends``, ``nurture log --json``): times
        as ISO 8601 in UTC."""
        event = self.latest_event
        return {
            "id": self.id,
            "decided_at": self.decided_at.isoformat(),
            "sent_at": None if self.sent_at is None else self.sent_at.isoformat(),
            "status": self.status,
            "reason": self.reason,
            "attempts": self.attempts,
            "email": self.email,
            "name": self.name,
            "sequence": self.sequence_id,
            "step": self.step_id,
            "subject": self.subject,
            "provider_message_id": self.provider_message_id,
            "latest_event": None
            if event is None
            else {"kind": event.kind, "at": event.at.isoformat(), "machine": event.machine},
        }


@dataclass(frozen=True)
class SendPage:
    """One page, newest first; ``older`` and ``newer`` are the cursors of the
    pages next to it (None at either end)."""

    lines: list[SendLine]
    older: str | None
    newer: str | None


# ------------------------------------------------------------------ reading input


def parse_moment(text: str, zone: str = "UTC", *, end: bool = False) -> datetime:
    """A date (``2026-11-27``: the start of that day in ``zone``, or with
    ``end`` the start of the next) or an ISO 8601 time (without an offset: in
    ``zone``), as an aware datetime. Raises :class:`SendLogError`."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end:
                day += timedelta(days=1)
            moment = datetime.combine(day, time(0), tzinfo=admin_zone(zone))
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=admin_zone(zone))
    except ValueError as exc:
        raise SendLogError(
            f"{text!r} is not a date (2026-11-27) or an ISO 8601 time (2026-11-27T14:30:00Z)"
        ) from exc
    except OverflowError as exc:  # the day after 9999-12-31
        raise SendLogError(
            f"{text!r} is out of range: use a year from 1 to 9999, and a date up to "
            "9999-12-30 (the day after 9999-12-31 is past the calendar) or a time"
        ) from exc
    if not _in_utc(moment):
        raise SendLogError(f"{text!r} is out of range: use a year from 1 to 9999")
    return moment


def _in_utc(moment: datetime) -> bool:
    """Whether ``moment`` is also a datetime in UTC, as the database stores it
    (``0001-01-01T00:00+14:00`` is not: in UTC it is in year 0)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def _given(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse_filter(
    *,
    status: str | None = None,
    sequence: str | None = None,
    step: str | None = None,
    email: str | None = None,
    since: str | None = None,
    until: str | None = None,
    zone: str = "UTC",
) -> SendFilter:
    """The filter for what a person typed; empty values mean "any". ``since``
    and ``until`` are dates or times in ``zone`` (``until`` a date: through the
    end of that day). Raises :class:`SendLogError`."""
    status = _given(status)
    if status is not None and status not in SEND_STATUSES:
        raise SendLogError(f"status {status!r}: use one of {', '.join(SEND_STATUSES)}")
    address = _given(email)
    text_since, text_until = _given(since), _given(until)
    return SendFilter(
        status=status,
        sequence=_given(sequence),
        step=_given(step),
        email=None if address is None else address.lower(),
        since=None if text_since is None else parse_moment(text_since, zone),
        until=None if text_until is None else parse_moment(text_until, zone, end=True),
    )


# ----------------------------------------------------------------------- cursors


def _encode(direction: str, row: SendLine) -> str:
    assert row.id is not None
    raw = f"{direction}|{row.decided_at.astimezone(UTC).isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")


def _decode(cursor: str) -> tuple[str, Position]:
    """A cursor of :func:`_encode` back; anything else is a :class:`SendLogError`."""
    bad = SendLogError("this page link is damaged: start again from the newest page")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        direction, at, number = raw.split("|")
        moment = datetime.fromisoformat(at)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise bad from exc
    # An id no row can have (nurture.store.ids): the database would fail on it, a 500.
    send_id = parse_id(number, minimum=0)
    if direction not in ("o", "n") or moment.tzinfo is None or send_id is None:
        raise bad
    if not _in_utc(moment):  # hand-made: ours are written in UTC
        raise bad
    return direction, Position(moment, send_id)


# ------------------------------------------------------------------------ reading


def _lines(engine: Engine, rows: list[dict[str, Any]]) -> list[SendLine]:
    ids = [row["id"] for row in rows if not row.get("confirmation")]
    with engine.connect() as conn:
        events = store.latest_events(conn, ids)
    return [
        SendLine.of(row, None if row.get("confirmation") else events.get(row["id"])) for row in rows
    ]


def read_page(
    engine: Engine, where: SendFilter, *, cursor: str | None = None, limit: int = 50
) -> SendPage:
    """One page of the log: the newest, or the one a cursor of a previous page
    points to. Raises :class:`SendLogError` for a damaged cursor."""
    limit = max(1, min(limit, MAX_LIMIT))
    direction, position = _decode(cursor) if cursor else ("o", None)
    with engine.connect() as conn:
        if direction == "n":
            rows = store.page(conn, where, limit=limit + 1, newer_than=position)
            more_newer, rows = len(rows) > limit, rows[-limit:]
            more_older = True  # the page the cursor came from is older
        else:
            rows = store.page(conn, where, limit=limit + 1, older_than=position)
            more_older, rows = len(rows) > limit, rows[:limit]
            more_newer = position is not None
        events = store.latest_events(conn, [row["id"] for row in rows])
    lines = [SendLine.of(row, events.get(row["id"])) for row in rows]
    return SendPage(
        lines,
        older=_encode("o", lines[-1]) if lines and more_older else None,
        newer=_encode("n", lines[0]) if lines and more_newer else None,
    )


def walk(engine: Engine, where: SendFilter, *, batch: int = 1000) -> Iterator[SendLine]:
    """Every line matching ``where``, newest first, read ``batch`` rows at a
    time (each batch its own short read, so a slow reader holds nothing open)."""
    position: Position | None = None
    while True:
        with engine.connect() as conn:
            rows = store.page(conn, where, limit=batch, older_than=position)
            events = store.latest_events(conn, [row["id"] for row in rows])
        yield from (SendLine.of(row, events.get(row["id"])) for row in rows)
        if len(rows) < batch:
            return
        position = Position(rows[-1]["decided_at"], rows[-1]["id"])


def recent(engine: Engine, where: SendFilter, *, limit: int = 50) -> list[SendLine]:
    """The newest ``limit`` lines with sign-up's confirmation emails among
    them: ``nurture log``."""
    with engine.connect() as conn:
        rows = store.with_confirmations(conn, where, limit=max(1, min(limit, 100_000)))
    return _lines(engine, rows)


# --------------------------------------------------------------------------- CSV

CSV_HEADER = (
    "id", "decided_at", "sent_at", "email", "name", "sequence", "step", "subject", "status",
    "attempts", "latest_event", "latest_event_at", "provider_message_id", "reason",
)  # fmt: skip

_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> str:
    """A CSV cell a spreadsheet will not run as a formula: text starting with
    ``= + - @``, a tab or a carriage return gets a leading single quote (OWASP's
    advice on CSV injection)."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text.startswith(_FORMULA_LEADS) else text


def csv_rows(engine: Engine, where: SendFilter, *, batch: int = 1000) -> Iterator[str]:
    """The filtered log as CSV text, a header and then one chunk per batch of
    :func:`walk`: for a streamed download, never the whole log in memory.

    Every cell is quoted: a spreadsheet whose list separator is ``;`` (Excel
    in Swedish, German, French...) splits an unquoted ``Anna;=cmd|...`` at the
    ``;`` into a cell that starts with ``=``, past :func:`neutralise`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)
    writer.writerow(CSV_HEADER)
    for count, line in enumerate(walk(engine, where, batch=batch), start=1):
        event = line.latest_event
        writer.writerow(
            [
                neutralise(value)
                for value in (
                    line.id,
                    line.decided_at,
                    line.sent_at,
                    line.email,
                    line.name,
                    line.sequence_id,
                    line.step_id,
                    line.subject,
                    line.status,
                    line.attempts,
                    None if event is None else event.label,
                    None if event is None else event.at,
                    line.provider_message_id,
                    line.reason,
                )
            ]
        )
        if count % batch == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
