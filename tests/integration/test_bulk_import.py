"""A CSV import larger than its chunks: streamed, counted, enrolled in bulk."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import text
from sqlmodel import Session, col, select

from nurture.audience.csv_import import STATISTICS_AFTER, ImportFileError, import_csv
from nurture.audience.csv_records import CELL_LIMIT
from nurture.audience.input import InvalidSubscriberError, normalise_email
from nurture.core.loader import LoadedSequence, parse_sequence
from nurture.store.queries import hashed_address
from nurture.store.tables import EnrollmentRow, SubscriberRow, SuppressionRow
from tests.factories import sequence_dict

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _loaded(sequence_id: str, trigger: dict[str, Any]) -> LoadedSequence:
    data = {**sequence_dict(id=sequence_id), "trigger": trigger}
    loaded, problems = parse_sequence(json.dumps(data), f"{sequence_id}.yaml")
    assert loaded is not None, problems
    return loaded


@pytest.fixture
def sequences() -> dict[str, LoadedSequence]:
    return {
        "welcome": _loaded("welcome", {"event": "subscribed", "tags": ["b2b"]}),
        "vip": _loaded("vip", {"event": "subscribed", "tags": ["vip"]}),
    }


def _people(tmp_path: Path) -> Path:
    """25 data rows: every fifth bad, two repeats in later chunks, a blank line."""
    lines = ["email,name,tags,company"]
    for n in range(25):
        email = f"bad-{n}" if n % 5 == 4 else f"Person{n}@Example.com"
        lines.append(f"{email},Person {n},{'b2b' if n % 2 else 'news'},Company {n}")
    lines.insert(8, "")
    lines.append("person0@example.com,,vip,")  # line 28: repeats line 2 (a new tag)
    lines.append("PERSON1@example.com,Person One,,")  # line 29: repeats line 3 (a new name)
    path = tmp_path / "people.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_file_larger_than_a_chunk_is_imported_and_reported_whole(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    calls: list[tuple[int, int]] = []

    report = import_csv(
        session,
        _people(tmp_path),
        sequences=sequences,
        now=NOW,
        chunk_size=4,
        progress=lambda done, total: calls.append((done, total)),
    )

    assert (report.imported, report.updated, report.unchanged) == (20, 2, 0)
    # Bad rows by their file line: row n is on line n + 2, and n + 3 after the blank line.
    assert [line for line, _ in report.errors] == [6, 12, 17, 22, 27]
    assert all("invalid email address" in message for _, message in report.errors)
    assert report.duplicates == [(28, 2), (29, 3)]
    # 27 records, 4 at a time: the counts rise to the total, which is known from the start.
    assert calls == [(n, 27) for n in (4, 8, 12, 16, 20, 24, 27)]
    # b2b: the odd rows that are good (10); vip: person0 by its repeat.
    assert report.enrollments == {"welcome": 10, "vip": 1}
    assert report.enrolled == 11
    assert report.no_trigger == 9  # the even good rows but person0
    rows = {row.email: row for row in session.exec(select(SubscriberRow))}
    assert len(rows) == 20
    assert rows["person0@example.com"].tags == ["news", "vip"]
    assert rows["person1@example.com"].name == "Person One"
    assert rows["person2@example.com"].attributes == {"company": "Company 2"}


def test_repeats_within_one_chunk_are_merged_before_the_insert(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    path = tmp_path / "repeats.csv"
    path.write_text(
        "email,name,tags\nanna@example.com,Anna,news\nANNA@example.com,,vip\n"
        "anna@example.com,,vip\nbo@example.com,Bo,\n",
        encoding="utf-8",
    )

    report = import_csv(session, path, sequences=sequences, now=NOW)

    assert (report.imported, report.updated, report.unchanged) == (2, 1, 1)
    assert report.duplicates == [(3, 2), (4, 2)]
    anna = session.exec(select(SubscriberRow).where(SubscriberRow.email == "anna@example.com"))
    assert anna.one().tags == ["news", "vip"]
    assert report.enrollments == {"vip": 1}


def test_suppressed_addresses_are_never_enrolled_in_bulk(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    session.add(SuppressionRow(email="bounced@example.com", reason="hard bounce", created_at=NOW))
    session.add(
        SuppressionRow(email=hashed_address("erased@example.com"), reason="erased", created_at=NOW)
    )
    session.commit()
    path = tmp_path / "b2b.csv"
    path.write_text(
        "email,tags\nBounced@example.com,b2b\nerased@example.com,b2b\nok@example.com,b2b\n",
        encoding="utf-8",
    )

    report = import_csv(session, path, sequences=sequences, now=NOW, chunk_size=2)

    assert report.imported == 3
    assert report.enrollments == {"welcome": 1}
    enrolled = session.exec(
        select(SubscriberRow.email).join(
            EnrollmentRow, col(EnrollmentRow.subscriber_id) == col(SubscriberRow.id)
        )
    ).all()
    assert enrolled == ["ok@example.com"]


@pytest.mark.parametrize(
    "address",
    [
        "Anna.Svensson@Example.COM",
        "o'brien+news@mail.example.ie",
        "a..b@example.com",
        ".a@example.com",
        "a@localhost",
        "a@example.test",
        "a@-example.com",
        "a@bücher.ch",
        "ÅSA@exempel.se",
        "a" * 64 + "@example.com",
        "a" * 65 + "@example.com",
        "a@" + "b" * 64 + ".com",
        '"quoted"@example.com',
        "a@[192.0.2.1]",
        "a@example",
    ],
)
def test_the_quick_address_check_agrees_with_email_validator(address: str) -> None:
    try:
        expected: str | None = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    try:
        got: str | None = normalise_email(address)
    except InvalidSubscriberError:
        got = None
    assert got == (expected.lower() if expected is not None else None)


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (b'bo@example.com,"' + b"x" * (CELL_LIMIT + 1) + b'"\n', ":3: field larger than"),
        (b"bo@example.com,B\xf6rje\n", ":3: not UTF-8"),
    ],
)
def test_a_file_unreadable_past_its_first_chunk_imports_nothing(
    session: Session,
    sequences: dict[str, LoadedSequence],
    tmp_path: Path,
    tail: bytes,
    message: str,
) -> None:
    path = tmp_path / "late.csv"
    path.write_bytes(b"email,name\nanna@example.com,Anna\n" + tail)

    with pytest.raises(ImportFileError, match=re.escape(message)):
        import_csv(session, path, sequences=sequences, now=NOW, chunk_size=1)

    assert session.exec(select(SubscriberRow)).all() == []


def test_bulk_rows_are_the_rows_one_at_a_time_would_write(
    engine: Any, sequences: dict[str, LoadedSequence]
) -> None:
    """The bulk insert (on SQLite, straight to the driver) stores every column
    exactly as the ORM path does: times with microseconds, JSON with unicode,
    empty and missing values, the enrollments."""
    from nurture.audience.consent import Consent
    from nurture.audience.input import SubscriberInput
    from nurture.audience.subscribers import bulk_upsert_subscribers, upsert_subscribers

    now = datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC)
    consent = Consent.parse("import", "Sign me up — tack!", "192.0.2.1")

    def people(prefix: str) -> list[SubscriberInput]:
        return [
            SubscriberInput.parse(
                email=f"{prefix}{n}@example.com",
                name=["Åsa Öberg", "", "名前"][n % 3],
                first_name=None if n % 2 else "Åsa",
                timezone="Europe/Stockholm" if n % 2 else None,
                locale="sv" if n % 2 else None,
                tags=["b2b", "vip"][: n % 3],
                attributes={"company": "Doe AB ☃", "seats": n} if n % 2 else {},
            )
            for n in range(6)
        ]

    with Session(engine) as session:
        bulk_upsert_subscribers(
            session, people("bulk"), consent=consent, now=now, sequences=sequences
        )
        upsert_subscribers(session, people("orm"), consent=consent, now=now, sequences=sequences)
        session.commit()
    with Session(engine) as session:
        rows = session.exec(select(SubscriberRow)).all()
        enrollments = session.exec(select(EnrollmentRow)).all()
        ids = {row.id: row.email for row in rows}

        def subscribers(prefix: str) -> list[dict[str, Any]]:
            return sorted(
                (
                    {**row.model_dump(exclude={"id"}), "email": row.email.removeprefix(prefix)}
                    for row in rows
                    if row.email.startswith(prefix)
                ),
                key=lambda value: value["email"],
            )

        def enrolled(prefix: str) -> list[tuple[Any, ...]]:
            return sorted(
                (
                    ids[e.subscriber_id].removeprefix(prefix),
                    e.sequence_id,
                    e.sequence_version,
                    e.status,
                    e.next_due_at,
                    e.enrolled_at,
                    e.trigger_properties,
                )
                for e in enrollments
                if ids[e.subscriber_id].startswith(prefix)
            )

        assert subscribers("bulk") == subscribers("orm")
        assert len(subscribers("bulk")) == 6
        assert subscribers("bulk")[0]["created_at"] == now  # the microseconds kept
        assert enrolled("bulk") == enrolled("orm")
        assert enrolled("bulk")  # some were enrolled


def test_a_megabyte_cell_is_its_rows_error_not_the_files(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    path = tmp_path / "huge.csv"
    huge = "x" * 1_000_000
    path.write_text(
        f"email,name,tags\na@example.com,Ann,b2b\nb@example.com,{huge},b2b\nc@example.com,Cai,b2b\n",
        encoding="utf-8",
    )
    report = import_csv(session, path, sequences=sequences, now=NOW)
    assert report.imported == 2
    assert [line for line, _ in report.errors] == [3]
    assert "name" in report.errors[0][1]
    emails = set(session.exec(select(SubscriberRow.email)))
    assert emails == {"a@example.com", "c@example.com"}


def _planner_rows(session: Session, table: str) -> float | None:
    """PostgreSQL's estimate of ``table``'s rows (pg_class.reltuples, which
    ANALYZE sets); None on SQLite."""
    if session.connection().dialect.name != "postgresql":
        return None
    return float(
        session.execute(  # type: ignore[call-overload]
            text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}
        ).scalar_one()
    )


def test_a_large_import_refreshes_the_planners_statistics(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    few = tmp_path / "few.csv"
    few.write_text("email,tags\n" + "".join(f"f{n}@example.com,b2b\n" for n in range(5)))
    many = tmp_path / "many.csv"
    count = STATISTICS_AFTER + 100
    many.write_text("email,tags\n" + "".join(f"m{n}@example.com,b2b\n" for n in range(count)))

    assert import_csv(session, few, sequences=sequences, now=NOW).imported == 5
    before = _planner_rows(session, "subscriber")
    report = import_csv(session, many, sequences=sequences, now=NOW)
    assert report.imported == count and report.enrolled == count

    if before is None:  # SQLite: nurture never asks it to keep statistics
        tables = session.execute(  # type: ignore[call-overload]
            text("SELECT name FROM sqlite_master WHERE name LIKE 'sqlite_stat%'")
        ).all()
        assert tables == []
        return
    # A small import leaves the statistics to autovacuum; a large one refreshes
    # them at once, so the worker's next claim is planned on the real sizes.
    assert before < 5
    assert _planner_rows(session, "subscriber") == count + 5
    assert _planner_rows(session, "enrollment") == count + 5


def test_a_header_wider_than_any_row_can_use_is_refused_at_once(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    """100,000 columns took minutes (a quadratic duplicate check, twice);
    past MAX_COLUMNS the file is refused at line 1 before anything is read."""
    from nurture.audience.csv_import import MAX_COLUMNS

    width = 100_000
    path = tmp_path / "wide.csv"
    names = ",".join(f"col{i}" for i in range(width))
    path.write_text(f"email,{names}\nwide@example.com,{','.join('v' * width)}\n")
    with pytest.raises(ImportFileError, match=f"wide.csv:1: the header has {width + 1:,} columns"):
        import_csv(session, path, sequences=sequences, now=NOW)
    assert session.exec(select(SubscriberRow)).all() == []
    # At the limit the header is read, duplicates found, and the note short.
    at_limit = tmp_path / "limit.csv"
    cells = [f"col{i % (MAX_COLUMNS // 2)}" for i in range(MAX_COLUMNS - 1)]
    at_limit.write_text("email," + ",".join(cells) + "\nanna@example.com\n")
    with pytest.raises(ImportFileError, match="duplicate column"):
        import_csv(session, at_limit, sequences=sequences, now=NOW)
