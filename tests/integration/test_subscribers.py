"""The subscriber service and its CLI commands, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from nurture.app.settings import Settings
from nurture.audience.csv_import import ImportFileError, import_csv
from nurture.audience.subscribers import (
    EnrollmentError,
    InvalidSubscriberError,
    add_subscriber,
    enroll,
    enroll_matching,
    get_subscriber,
    list_subscribers,
    normalise_email,
    subscriber_view,
    unenroll,
)
from nurture.cli.context import AppContext
from nurture.cli.enroll import enroll_command, unenroll_command
from nurture.cli.subscribers import subscribers_app
from nurture.core.loader import LoadedSequence, parse_sequence
from nurture.errors import ConfigurationError
from nurture.store.db import make_engine, session_factory
from nurture.store.migrate import upgrade
from nurture.store.tables import EnrollmentRow, SendRow, SubscriberRow, SuppressionRow
from tests.factories import sequence_dict

NOW = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
LATER = NOW + timedelta(days=1)


def _loaded(sequence_id: str, trigger: dict[str, Any] | None) -> LoadedSequence:
    data = sequence_dict(id=sequence_id)
    if trigger is not None:
        data["trigger"] = trigger
    # JSON is YAML: the real loader, from text, as a marketer's file would be read.
    loaded, problems = parse_sequence(json.dumps(data), f"{sequence_id}.yaml")
    assert loaded is not None, problems
    return loaded


@pytest.fixture
def sequences() -> dict[str, LoadedSequence]:
    return {
        "welcome": _loaded("welcome", {"event": "subscribed"}),
        "vip": _loaded("vip", {"event": "subscribed", "tags": ["vip", "b2b"]}),
        "manual": _loaded("manual", None),
    }


def _add(
    session: Session, sequences: dict[str, LoadedSequence], email: str, **kwargs: Any
) -> tuple[SubscriberRow, list[EnrollmentRow]]:
    kwargs.setdefault("consent_source", "test")
    kwargs.setdefault("now", NOW)
    return add_subscriber(session, email=email, sequences=sequences, **kwargs)


def _enrollments(session: Session) -> list[tuple[str, str, str]]:
    rows = session.exec(select(EnrollmentRow).order_by(col(EnrollmentRow.id))).all()
    emails = {s.id: s.email for s in session.exec(select(SubscriberRow))}
    return [(emails[e.subscriber_id], e.sequence_id, e.status) for e in rows]


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("anna@example.com", "anna@example.com"),
        ("  Anna.Svensson@Example.COM \n", "anna.svensson@example.com"),
        ("ÅSA@exempel.se", "åsa@exempel.se"),
    ],
)
def test_addresses_are_normalised(given: str, stored: str) -> None:
    assert normalise_email(given) == stored


@pytest.mark.parametrize(
    "bad", ["", "   ", "anna", "anna@", "anna@@example.com", "a b@example.com"]
)
def test_invalid_addresses_are_refused_clearly(bad: str) -> None:
    with pytest.raises(InvalidSubscriberError, match="email address"):
        normalise_email(bad)


# --------------------------------------------------------------------------- adding


def test_add_creates_a_subscriber_with_its_consent(
    session: Session, sequences: dict[str, LoadedSequence]
) -> None:
    row, _ = _add(
        session,
        sequences,
        " Anna@Example.com",
        name="Anna Svensson",
        tz="Europe/Stockholm",
        locale="sv_se",
        tags=["b2b", " ", "b2b", "lead"],
        attributes={"company": "Exempel AB", "employees": 12},
        consent_source="signup form",
        consent_text="Yes, send me the five emails about sales processes.",
        consent_ip="192.0.2.10",
    )
    session.commit()
    session.expunge_all()

    stored = session.exec(select(SubscriberRow)).one()
    assert stored.id == row.id
    assert stored.email == "anna@example.com"
    assert stored.name == "Anna Svensson"
    assert stored.timezone == "Europe/Stockholm"
    assert stored.locale == "sv-SE"
    assert stored.tags == ["b2b", "lead"]
    assert stored.attributes == {"company": "Exempel AB", "employees": 12}
    assert stored.status == "active"
    assert (stored.consent_at, stored.consent_source, stored.consent_ip) == (
        NOW,
        "signup form",
        "192.0.2.10",
    )
    assert stored.consent_text == "Yes, send me the five emails about sales processes."
    assert stored.created_at == stored.updated_at == NOW


def test_re_adding_an_address_updates_the_same_row(
    session: Session, sequences: dict[str, LoadedSequence]
) -> None:
    first, _ = _add(
        session, sequences, "anna@example.com", name="Anna", tags=["a"], attributes={"x": "1"}
    )
    session.commit()
    again, _ = _add(
        session,
        sequences,
        "ANNA@example.com ",
        tags=["b", "a"],
        attributes={"y": "2"},
        tz="Europe/Stockholm",
        consent_source="import",
        consent_text="other wording",
        now=LATER,
    )
    session.commit()

    assert again.id == first.id
    assert len(session.exec(select(SubscriberRow)).all()) == 1
    assert again.name == "Anna"  # not given the second time: kept
    assert again.tags == ["a", "b"]
    assert again.attributes == {"x": "1", "y": "2"}
    assert again.timezone == "Europe/Stockholm"
    assert again.updated_at == LATER
    # The original opt-in stays the consent record.
    assert (again.consent_at, again.consent_source, again.consent_text) == (NOW, "test", None)


def test_re_adding_the_same_data_writes_nothing(
    session: Session, sequences: dict[str, LoadedSequence]
) -> None:
    _add(session, sequences, "anna@example.com", name="Anna", tags=["a"], tz="UTC")
    session.commit()
    row, enrollments = _add(
        session, sequences, "anna@example.com", name="Anna", tags=["a"], tz="UTC", now=LATER
    )
    assert row.updated_at == NOW
    assert enrollments == []
    assert not session.dirty


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("email", "not-an-address", "invalid email address 'not-an-address'"),
        ("tz", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("tz", "europe/stockholm", "did you mean 'Europe/Stockholm'"),
        ("tz", "localtime", "unknown time zone"),
        ("locale", "xx-YY", "unknown locale 'xx-YY'"),
        ("consent_ip", "999.1.1.1", "not an IP address"),
        ("consent_source", " ", "consent source is empty"),
        ("name", "x" * 201, "name is longer than 200"),
    ],
)
def test_invalid_input_is_refused_with_a_clear_error(
    session: Session,
    sequences: dict[str, LoadedSequence],
    field: str,
    value: str,
    message: str,
) -> None:
    kwargs: dict[str, Any] = {"email": "anna@example.com", field: value}
    email = kwargs.pop("email")
    with pytest.raises(InvalidSubscriberError, match=message):
        _add(session, sequences, email, **kwargs)
    assert session.exec(select(SubscriberRow)).all() == []


# --------------------------------------------------------------------------- triggers


def test_subscribing_enrolls_where_the_trigger_matches(
    session: Session, sequences: dict[str, LoadedSequence]
) -> None:
    row, enrollments = _add(session, sequences, "anna@example.com", tags=["vip"])
    session.commit()

    assert [e.sequence_id for e in enrollments] == ["welcome"]
    enrollment = enrollments[0]
    assert enrollment.subscriber_id == row.id
    assert enrollment.sequence_version == sequences["welcome"].version
    assert enrollment.status == "active"
    assert enrollment.enrolled_at == enrollment.next_due_at == NOW
    assert enrollment.position is None

    # Gaining the last tag the vip trigger needs enrolls there too, once.
    _, more = _add(session, sequences, "anna@example.com", tags=["b2b"], now=LATER)
    session.commit()
    assert [e.sequence_id for e in more] == ["vip"]
    assert _enrollments(session) == [
        ("anna@example.com", "welcome", "active"),
        ("anna@example.com", "vip", "active"),
    ]


def test_finished_sequences_are_not_repeated(
    session: Session, sequences: dict[str, LoadedSequence]
) -> None:
    _, [enrollment] = _add(session, sequences, "anna@example.com")
    enrollment.status = "completed"
    session.commit()

    _, again = _add(session, sequences, "anna@example.com", name="Anna", now=LATER)
    assert again == []


def test_suppressed_and_unsubscribed_addresses_are_not_enrolled(
    session: Session, sequences: dict[str, LoadedSequence]
) -> None:
    session.add(SuppressionRow(email="bounced@example.com", reason="hard bounce", created_at=NOW))
    left, _ = _add(session, sequences, "left@example.com", tags=["x"])
    left.status = "unsubscribed"
    # An unsubscribed address that never enrolled in welcome (it was added before).
    for enrollment in session.exec(select(EnrollmentRow)):
        session.delete(enrollment)
    session.commit()

    _, suppressed = _add(session, sequences, "Bounced@example.com")
    row, unsubscribed = _add(session, sequences, "left@example.com", tags=["y"], now=LATER)
    session.commit()

    assert suppressed == []
    assert unsubscribed == []
    assert row.status == "unsubscribed"  # re-adding does not resubscribe
    assert _enrollments(session) == []


def test_unconfirmed_subscribers_are_enrolled_once_confirmed(
    session: Session, sequences: dict[str, LoadedSequence]
) -> None:
    row, enrollments = _add(session, sequences, "anna@example.com", status="unconfirmed")
    assert (row.status, enrollments) == ("unconfirmed", [])

    row.status = "active"
    assert [e.sequence_id for e in enroll_matching(session, row, sequences, LATER)] == ["welcome"]


# --------------------------------------------------------------------------- enroll / unenroll


def test_enroll_and_unenroll(session: Session, sequences: dict[str, LoadedSequence]) -> None:
    row, _ = _add(session, sequences, "anna@example.com")
    enrollment = enroll(session, row, sequences["manual"], LATER)
    session.commit()
    assert (enrollment.sequence_id, enrollment.status, enrollment.next_due_at) == (
        "manual",
        "active",
        LATER,
    )

    with pytest.raises(EnrollmentError, match="already enrolled in 'manual'"):
        enroll(session, row, sequences["manual"], LATER)

    ended = unenroll(session, row, "manual", LATER, reason="asked by phone")
    session.commit()
    assert (ended.status, ended.status_reason, ended.next_due_at, ended.updated_at) == (
        "exited",
        "asked by phone",
        None,
        LATER,
    )
    with pytest.raises(EnrollmentError, match="not enrolled in 'manual'"):
        unenroll(session, row, "manual", LATER)

    # An admin may put someone through a sequence again on purpose.
    enroll(session, row, sequences["manual"], LATER)
    session.commit()
    assert _enrollments(session) == [
        ("anna@example.com", "welcome", "active"),
        ("anna@example.com", "manual", "exited"),
        ("anna@example.com", "manual", "active"),
    ]


def test_enroll_refuses_subscribers_who_may_not_be_mailed(
    session: Session, sequences: dict[str, LoadedSequence]
) -> None:
    row, _ = _add(session, sequences, "anna@example.com")
    row.status = "unsubscribed"
    with pytest.raises(EnrollmentError, match="unsubscribed"):
        enroll(session, row, sequences["manual"], LATER)
    row.status = "active"
    session.add(SuppressionRow(email="anna@example.com", reason="complaint", created_at=NOW))
    with pytest.raises(EnrollmentError, match="suppression"):
        enroll(session, row, sequences["manual"], LATER)


# --------------------------------------------------------------------------- reading


def test_lookups_and_the_core_view(session: Session, sequences: dict[str, LoadedSequence]) -> None:
    for i in range(5):
        _add(session, sequences, f"p{i}@example.com", name=f"Person Number{i}")
    row, _ = _add(session, sequences, "anna@example.com", first_name="Annie", tags=["t"])
    row.status = "unsubscribed"
    session.commit()

    assert get_subscriber(session, " ANNA@example.com") is row
    assert get_subscriber(session, "nobody@example.com") is None
    assert [r.email for r in list_subscribers(session, limit=2, offset=1)] == [
        "p1@example.com",
        "p2@example.com",
    ]
    assert [r.email for r in list_subscribers(session, 10, 0, status="unsubscribed")] == [
        "anna@example.com"
    ]

    view = subscriber_view(row)
    assert (view.email, view.first_name, view.tags) == ("anna@example.com", "Annie", ("t",))
    assert subscriber_view(list_subscribers(session, 1)[0]).first_name == "Person"


# --------------------------------------------------------------------------- CSV


def _write(tmp_path: Path, text: str, name: str = "people.csv", bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


PEOPLE = (
    "Email,Name,tz,locale,tags,attr.company\r\n"
    "anna@example.com,Anna Svensson,Europe/Stockholm,sv,vip;b2b,Exempel AB\r\n"
    "not-an-address,Nobody,,,,\r\n"
    'bo@example.com,"Bo ""the boss"" Ek",,en-GB,lead|b2b,\r\n'
    "\r\n"
    "cia@example.com,Cia,Mars/Base,,,\r\n"
    # A quoted cell may span lines (free text may; a name may not).
    '"dan@example.com",Dan,,,,"Dan AB\nStockholm"\r\n'
    "eva@example.com,Eva,,,,\r\n"
)


def test_import_keeps_good_rows_and_reports_bad_ones_by_line(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    path = _write(tmp_path, PEOPLE, bom=True)
    calls: list[tuple[int, int]] = []

    report = import_csv(
        session,
        path,
        sequences=sequences,
        now=NOW,
        consent_text="imported from the fair",
        progress=lambda done, total: calls.append((done, total)),
        chunk_size=2,
    )

    assert [(line, message.split(":")[0]) for line, message in report.errors] == [
        (3, "invalid email address 'not-an-address'"),
        (6, "unknown time zone 'Mars/Base' (use an IANA name such as Europe/Stockholm)"),
    ]
    assert (report.imported, report.updated, report.unchanged) == (4, 0, 0)
    assert report.enrolled == 5  # welcome x4, and vip for Anna
    assert calls == [(2, 6), (4, 6), (6, 6)]

    anna = get_subscriber(session, "anna@example.com")
    assert anna is not None
    assert (anna.locale, anna.tags, anna.attributes) == (
        "sv",
        ["vip", "b2b"],
        {"company": "Exempel AB"},
    )
    assert (anna.consent_source, anna.consent_text) == ("import", "imported from the fair")
    bo = get_subscriber(session, "bo@example.com")
    assert bo is not None
    assert (bo.name, bo.locale, bo.tags, bo.attributes) == (
        'Bo "the boss" Ek',
        "en-GB",
        ["lead", "b2b"],
        {},
    )
    dan = get_subscriber(session, "dan@example.com")
    assert dan is not None and dan.attributes == {"company": "Dan AB\nStockholm"}


def test_re_importing_a_file_changes_nothing(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    path = _write(tmp_path, PEOPLE)
    import_csv(session, path, sequences=sequences, now=NOW)
    before = _enrollments(session)

    report = import_csv(session, path, sequences=sequences, now=LATER)

    assert (report.imported, report.updated, report.unchanged, report.enrolled) == (0, 0, 4, 0)
    assert len(report.errors) == 2
    assert _enrollments(session) == before
    session.expunge_all()
    assert {row.updated_at for row in session.exec(select(SubscriberRow))} == {NOW}


def test_import_reads_semicolon_separated_files(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    path = _write(
        tmp_path, 'email;name;tags\nanna@example.com;Anna;"vip;b2b"\nbo@example.com;Bo;\n'
    )
    report = import_csv(session, path, sequences=sequences, now=NOW)
    assert (report.imported, report.errors) == (2, [])
    anna = get_subscriber(session, "anna@example.com")
    assert anna is not None and anna.tags == ["vip", "b2b"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", ":1: the file is empty"),
        (b"name,tags\nAnna,x\n", ":1: no 'email' column"),
        (b"email,attr.\na@example.com,123\n", "column 'attr.' needs a name after the dot"),
        (b"E-post,email\na@example.com,b@example.com\n", "duplicate column(s): email"),
        (b"email,email\na@example.com,b@example.com\n", "duplicate column(s): email"),
        # Latin-1 from an old Excel: refused before anything is imported.
        (b"email,name\nanna@example.com,Anna\nbo@example.com,B\xf6rje\n", ":3: not UTF-8"),
    ],
)
def test_a_bad_file_imports_nothing(
    session: Session,
    sequences: dict[str, LoadedSequence],
    tmp_path: Path,
    content: bytes,
    message: str,
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=re.escape(message)):
        import_csv(session, path, sequences=sequences, now=NOW)
    assert session.exec(select(SubscriberRow)).all() == []


def test_a_row_with_too_many_cells_is_an_error(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    path = _write(tmp_path, "email,name\nanna@example.com,Anna,extra\nbo@example.com,Bo\n")
    report = import_csv(session, path, sequences=sequences, now=NOW)
    assert report.errors == [(2, "3 cells but the header has 2 columns")]
    assert report.imported == 1


def test_a_short_row_reads_its_missing_cells_as_empty(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    """Cells are matched to columns by position, whatever order the header
    names them in; a row that stops early has the rest empty (not given)."""
    path = _write(
        tmp_path,
        "Company,email,tags,name\n"
        "Doe AB,anna@example.com,b2b,Anna\n"
        "Acme,bo@example.com\n"
        ",cai@example.com,,Cai\n",
    )
    report = import_csv(session, path, sequences=sequences, now=NOW)
    assert (report.imported, report.errors) == (3, [])
    rows = {row.email: row for row in session.exec(select(SubscriberRow)).all()}
    assert (rows["anna@example.com"].name, rows["anna@example.com"].tags) == ("Anna", ["b2b"])
    assert rows["anna@example.com"].attributes == {"company": "Doe AB"}
    assert (rows["bo@example.com"].name, rows["bo@example.com"].tags) == ("", [])
    assert rows["bo@example.com"].attributes == {"company": "Acme"}
    assert (rows["cai@example.com"].name, rows["cai@example.com"].attributes) == ("Cai", {})


# --------------------------------------------------------------------------- CLI


@dataclass
class FakeApp:
    """An :class:`AppContext` on the test database, with a fixed clock."""

    url: str
    loaded: dict[str, LoadedSequence]
    clock: datetime = NOW
    broken_config: bool = False
    engines: list[Engine] = field(default_factory=list)

    def settings(self) -> Settings:
        return Settings(database_url=self.url)

    def now(self) -> datetime:
        return self.clock

    def open_store(self) -> tuple[Engine, sessionmaker[Session]]:
        engine = make_engine(self.url)
        upgrade(engine)
        return engine, session_factory(engine)

    def sequences(self) -> dict[str, LoadedSequence]:
        if self.broken_config:
            raise ConfigurationError("setting 'sequences_dir': not a folder")
        return self.loaded


@pytest.fixture
def fake_app(engine: Engine, sequences: dict[str, LoadedSequence]) -> FakeApp:
    app = FakeApp(engine.url.render_as_string(hide_password=False), sequences)
    assert isinstance(app, AppContext)
    return app


def _cli(app_context: FakeApp) -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = app_context

    root.add_typer(subscribers_app, name="subscribers")
    root.command("enroll")(enroll_command)
    root.command("unenroll")(unenroll_command)
    return root


def _run(app: FakeApp, *args: str) -> Any:
    return CliRunner().invoke(_cli(app), list(args), catch_exceptions=False)


def test_cli_add_show_list(fake_app: FakeApp) -> None:
    result = _run(
        fake_app,
        "subscribers", "add", "Anna@Example.com",
        "--name", "Anna Svensson", "--tz", "Europe/Stockholm", "--locale", "sv",
        "--tag", "vip", "--tag", "b2b", "--attr", "company=Exempel AB",
        "--consent", "Yes please",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Added anna@example.com" in result.stdout
    assert "enrolled in vip" in result.stdout
    assert "enrolled in welcome" in result.stdout

    result = _run(fake_app, "subscribers", "add", "anna@example.com", "--name", "Anna Svensson")
    assert "already up to date" in result.stdout

    result = _run(fake_app, "subscribers", "show", "anna@example.com")
    assert result.exit_code == 0, result.output
    for expected in ("Anna Svensson", "Exempel AB", "Yes please", "cli", "welcome", "vip"):
        assert expected in result.stdout
    # Due "now" (09:30 UTC), shown in Anna's zone: 10:30 CET.
    assert "2025-03-04 10:30 CET" in result.stdout
    assert "nothing sent yet" in result.stdout

    result = _run(fake_app, "subscribers", "list")
    assert result.exit_code == 0
    assert "anna@example.com" in result.stdout
    result = _run(fake_app, "subscribers", "list", "--status", "unsubscribed")
    assert "no subscribers with status unsubscribed" in result.stdout
    result = _run(fake_app, "subscribers", "list", "--status", "gone")
    assert result.exit_code == 1
    assert "unknown status 'gone'" in result.stderr


def test_cli_show_lists_the_send_log(fake_app: FakeApp, engine: Engine) -> None:
    assert _run(fake_app, "subscribers", "add", "anna@example.com").exit_code == 0
    with session_factory(engine)() as session:
        enrollment = session.exec(select(EnrollmentRow)).one()
        assert enrollment.id is not None
        session.add(
            SendRow(
                key="k1",
                enrollment_id=enrollment.id,
                subscriber_id=enrollment.subscriber_id,
                sequence_id="welcome",
                sequence_version=enrollment.sequence_version,
                step_id="hello",
                status="sent",
                due_at=NOW,
                decided_at=NOW,
                sent_at=NOW,
                attempts=1,
                subject="Hi Anna",
            )
        )
        session.commit()
    result = _run(fake_app, "subscribers", "show", "anna@example.com")
    assert "welcome / hello" in result.stdout
    assert "Hi Anna" in result.stdout


def test_cli_import_reports_bad_rows_and_keeps_good_ones(
    fake_app: FakeApp, engine: Engine, tmp_path: Path
) -> None:
    path = _write(tmp_path, PEOPLE)
    result = _run(fake_app, "subscribers", "import", str(path), "--consent", "fair 2025")
    assert result.exit_code == 1
    assert "4 imported, 0 updated, 0 unchanged, 2 with errors" in result.stdout
    assert f"{path}:3: invalid email address 'not-an-address'" in result.stderr
    assert f"{path}:6: unknown time zone 'Mars/Base'" in result.stderr
    with session_factory(engine)() as session:
        assert len(list_subscribers(session, 100)) == 4

    result = _run(fake_app, "subscribers", "import", str(tmp_path / "missing.csv"))
    assert result.exit_code == 1
    assert "cannot read" in result.stderr


def test_cli_enroll_and_unenroll(fake_app: FakeApp) -> None:
    assert _run(fake_app, "subscribers", "add", "anna@example.com").exit_code == 0

    result = _run(fake_app, "enroll", "anna@example.com", "manual")
    assert result.exit_code == 0, result.output
    assert "Enrolled anna@example.com in manual" in result.stdout
    result = _run(fake_app, "enroll", "anna@example.com", "manual")
    assert result.exit_code == 1
    assert "already enrolled" in result.stderr
    result = _run(fake_app, "enroll", "anna@example.com", "nope")
    assert result.exit_code == 1
    assert "unknown sequence 'nope' (valid sequences: manual, vip, welcome)" in result.stderr
    result = _run(fake_app, "enroll", "bo@example.com", "manual")
    assert result.exit_code == 1
    assert "no subscriber 'bo@example.com'" in result.stderr

    result = _run(fake_app, "unenroll", "anna@example.com", "manual", "--reason", "asked")
    assert result.exit_code == 0, result.output
    result = _run(fake_app, "unenroll", "anna@example.com", "manual")
    assert result.exit_code == 1
    assert "not enrolled in 'manual'" in result.stderr


def test_cli_errors_exit_1_and_configuration_errors_exit_2(fake_app: FakeApp) -> None:
    result = _run(fake_app, "subscribers", "add", "anna@example.com", "--tz", "Mars/Base")
    assert result.exit_code == 1
    assert "error: unknown time zone 'Mars/Base'" in result.stderr
    result = _run(fake_app, "subscribers", "add", "anna@example.com", "--attr", "oops")
    assert result.exit_code == 1
    assert "write it as key=value" in result.stderr

    fake_app.broken_config = True
    result = _run(fake_app, "subscribers", "add", "anna@example.com")
    assert result.exit_code == 2
    assert "setting 'sequences_dir'" in result.stderr


def test_cli_prints_names_and_tags_literally(fake_app: FakeApp) -> None:
    # Rich markup in outside text must be shown as written, not interpreted
    # (an unmatched closing tag used to crash `list` and `show`).
    result = _run(
        fake_app,
        "subscribers", "add", "anna@example.com",
        "--name", "Anna [/bold] [red]Svensson", "--tag", "[b]vip", "--attr", "note=[/]",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = _run(fake_app, "subscribers", "list")
    assert result.exit_code == 0, result.output
    assert "[red]Svensson" in result.stdout and "[b]vip" in result.stdout
    result = _run(fake_app, "subscribers", "show", "anna@example.com")
    assert result.exit_code == 0, result.output
    assert "Anna [/bold] [red]Svensson" in result.stdout
    assert "[/]" in result.stdout


def test_cli_refuses_a_zone_that_is_no_place_as_sequence_files_do(fake_app: FakeApp) -> None:
    for zone in ("localtime", "Factory"):
        refused = _run(fake_app, "subscribers", "add", "anna@example.com", "--tz", zone)
        assert refused.exit_code == 1
        loaded, problems = parse_sequence(json.dumps(sequence_dict(timezone=zone)), "seq.yaml")
        assert loaded is None
        assert [p.message for p in problems] == [
            "timezone: " + refused.stderr.strip().removeprefix("error: ")
        ]


# ------------------------------------------------------------ hostile input


def test_cli_add_refuses_control_characters_naming_the_field(fake_app: FakeApp) -> None:
    cases = [
        (["--name", "Anna\r\nBcc: all@example.com"], "error: name contains a line break"),
        (["--name", "Anna\x00"], "error: name contains a NUL character"),
        (["--first-name", "\x1b[31mAnna"], "error: first name contains a control character"),
        (["--tag", "vip\x1b]0;owned\x07"], "error: tag 1 contains a control character"),
        (["--attr", "note=\x00"], "error: attribute 'note' contains a NUL character"),
        (["--attr", "note=" + "x" * 2001], "error: attribute 'note' is longer than 2000"),
    ]
    for options, message in cases:
        result = _run(fake_app, "subscribers", "add", "anna@example.com", *options)
        assert result.exit_code == 1, (options, result.output)
        assert message in result.stderr, (options, result.stderr)
        assert "\x1b" not in result.stderr and "\x00" not in result.stderr
    result = _run(fake_app, "subscribers", "list")
    assert "no subscribers" in result.stdout


HOSTILE = (
    "email,name,attr.note\n"
    "anna@example.com,Anna,private note of Anna\n"
    "bo@example.com,Bo\x00,private note of Bo\n"
    'cia@example.com,"Cia\r\nBcc: all@example.com",private note of Cia\n'
    "dan@example.com,Dan,private note of Dan\n"
    'eva@example.com,Eva,"note\x1b[2J"\n'
)


def test_cli_import_reports_hostile_rows_by_line_and_imports_the_rest(
    fake_app: FakeApp, engine: Engine, tmp_path: Path
) -> None:
    # One NUL byte used to fail the whole chunk on PostgreSQL, printing the
    # other rows' data in the database error; on SQLite it was stored.
    path = _write(tmp_path, HOSTILE)
    result = _run(fake_app, "subscribers", "import", str(path))
    assert result.exit_code == 1, result.output
    assert "2 imported, 0 updated, 0 unchanged, 3 with errors" in result.stdout
    errors = result.stderr.splitlines()
    assert errors == [
        f"{path}:3: name contains a NUL character (U+0000)",
        f"{path}:4: name contains a line break (U+000D)",
        f"{path}:7: attribute 'note' contains a control character (U+001B)",
    ]
    assert "private note" not in result.output
    with session_factory(engine)() as session:
        stored = {row.email: row.name for row in list_subscribers(session, 100)}
    assert stored == {"anna@example.com": "Anna", "dan@example.com": "Dan"}


def test_import_isolates_a_row_the_database_refuses(
    session: Session, sequences: dict[str, LoadedSequence], tmp_path: Path
) -> None:
    # Should a value pass the input checks and still be refused by the
    # database, only its row is lost. A BEFORE INSERT trigger plays the
    # refusing database (portable enough: both dialects have triggers).
    bind = session.get_bind()
    with bind.begin() as conn:
        if bind.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_bo() RETURNS trigger AS $$ BEGIN "
                "IF NEW.email = 'bo@example.com' THEN RAISE EXCEPTION 'no: %%', NEW.name; "
                "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_bo BEFORE INSERT ON subscriber "
                "FOR EACH ROW EXECUTE FUNCTION refuse_bo()"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_bo BEFORE INSERT ON subscriber "
                "WHEN NEW.email = 'bo@example.com' "
                "BEGIN SELECT RAISE(ABORT, 'no'); END"
            )
    path = _write(
        tmp_path,
        "email,name\nanna@example.com,Anna Private\nbo@example.com,Bo Private\n"
        "cia@example.com,Cia Private\n",
    )
    report = import_csv(session, path, sequences=sequences, now=NOW)
    assert report.imported == 2
    assert [line for line, _ in report.errors] == [3]
    assert report.errors[0][1].startswith("the database refused this row (")
    assert "Private" not in report.errors[0][1]
    assert get_subscriber(session, "bo@example.com") is None
    assert get_subscriber(session, "cia@example.com") is not None


def test_cli_show_gives_when_the_next_email_really_goes_out(engine: Engine) -> None:
    """01:30 in Los Angeles is outside the send window: the welcome email goes
    out when it opens, and that is what `show` says, not the stored due time."""
    data = sequence_dict(
        id="windowed", trigger={"tags": []},
        send_window={"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"},
    )  # fmt: skip
    loaded, problems = parse_sequence(json.dumps(data), "windowed.yaml")
    assert loaded is not None, problems
    app = FakeApp(engine.url.render_as_string(hide_password=False), {"windowed": loaded})
    added = _run(app, "subscribers", "add", "lee@example.com", "--tz", "America/Los_Angeles")
    assert added.exit_code == 0, added.output
    assert "enrolled in windowed" in added.stdout
    result = _run(app, "subscribers", "show", "lee@example.com")
    assert result.exit_code == 0, result.output
    enrollments = result.stdout.split("Enrollments", 1)[1]
    assert "welcome: 2025-03-04 08:00 PST" in enrollments, result.stdout
    assert "01:30" not in enrollments


def test_cli_show_names_the_status_once(fake_app: FakeApp) -> None:
    assert _run(fake_app, "subscribers", "add", "anna@example.com").exit_code == 0
    result = _run(fake_app, "subscribers", "unsubscribe", "anna@example.com")
    assert result.exit_code == 0, result.output
    shown = _run(fake_app, "subscribers", "show", "anna@example.com")
    assert shown.exit_code == 0, shown.output
    # The reason already says "unsubscribed (how)": not "unsubscribed (unsubscribed (...))".
    assert "status      unsubscribed (admin)" in shown.stdout, shown.stdout
    assert "(unsubscribed" not in shown.stdout, shown.stdout
