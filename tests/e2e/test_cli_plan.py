"""``nurture plan`` through the real executable, checked against what the real
dispatcher then does.

The world of issue 10: subscribers mid-way through the example sequence, then
an edit that inserts a step first ('intro') and another after 'three-models'
('bonus'). Four positions:

* ``new@`` has not started (enrolled, nothing decided yet);
* ``nyc@`` is between steps, at 'welcome' (New York's Monday morning has not come);
* ``mid@`` is between steps, at 'three-models';
* ``end@`` completed the series before the edit.

The state before the edit is built in the test process with the same
dispatcher ``nurture dispatch`` runs (fast); what ``plan`` says and what
``nurture dispatch --once`` then does are both the real commands, and the
ledger is read back from the database.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime
from nurture.app.settings import Settings, load_settings
from nurture.audience.subscribers import add_subscriber
from nurture.store import queries
from nurture.store.db import make_engine, session_factory
from tests.e2e.test_cli_engine import NURTURE, env, run
from tests.factories import EXAMPLES

END_ENROLLED = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)  # a Monday, 08:00 in Stockholm
FRIDAY = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)  # 15:30 in Stockholm, 09:30 in New York
MONDAY = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)  # 09:30 in Stockholm, 03:30 in New York
EDITED = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # new@ enrolls; the file is edited; plan

INTRO = """\
  - id: intro
    wait: 0
    subject: {sv: "Hej!", en: "Hello!"}
    template: welcome.md

"""
BONUS = """\
  - id: bonus
    wait: 1 day
    subject: {sv: "En bonus", en: "A bonus"}
    template: choosing.md

"""


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _settings(work: Path, db_url: str) -> Settings:
    return load_settings(work, database_url=db_url)


def add(work: Path, db_url: str, now: datetime, *people: tuple[str, str]) -> None:
    """Add subscribers (email, zone) tagged b2b: they enroll in sales-process."""
    runtime = build_runtime(_settings(work, db_url), FixedClock(now))
    try:
        with session_factory(runtime.engine)() as session:
            for email, zone in people:
                add_subscriber(
                    session, email=email, name="Test Person", tz=zone, locale="en",
                    tags=["b2b"], consent_source="test", now=now,
                    sequences=runtime.registry.sequences(),
                )  # fmt: skip
            session.commit()
    finally:
        runtime.close()


def dispatch_in_process(
    work: Path, db_url: str, *moments: datetime, until: datetime | None = None
) -> None:
    """Passes of the dispatcher `nurture dispatch --once` runs, in this process:
    at each of ``moments``, then (with ``until``) at each next due time before it."""
    runtime = build_runtime(_settings(work, db_url), FixedClock(moments[0]))
    try:
        for now in moments:
            runtime.dispatcher.reconcile(now)
            runtime.dispatcher.dispatch(now)
        while until is not None:
            with runtime.engine.connect() as conn:
                due = queries.next_due_time(conn)
            if due is None or due >= until:
                break
            runtime.dispatcher.dispatch(due)
    finally:
        runtime.close()


def dispatch(work: Path, db_url: str, now: datetime) -> str:
    """`nurture dispatch --once` at ``now``."""
    result = run("--now", now.isoformat(), "dispatch", "--once", cwd=work, db_url=db_url)
    assert result.returncode == 0, result.stderr
    return result.stdout


def ledger(db_url: str, email: str) -> list[tuple[str, str, datetime, datetime | None]]:
    """(step, status, due_at, sent_at) of every send to ``email``, in decision order."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(queries.SEND.c.step_id, queries.SEND.c.status, queries.SEND.c.due_at,
                       queries.SEND.c.sent_at)
                .join(queries.SUBSCRIBER, queries.SUBSCRIBER.c.id == queries.SEND.c.subscriber_id)
                .where(queries.SUBSCRIBER.c.email == email)
                .order_by(queries.SEND.c.due_at, queries.SEND.c.id)
            )  # fmt: skip
            return [(r.step_id, r.status, r.due_at, r.sent_at) for r in rows]
    finally:
        engine.dispose()


def enrollment_status(db_url: str, email: str) -> str:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return str(
                conn.execute(
                    select(queries.ENROLLMENT.c.status)
                    .join(queries.SUBSCRIBER)
                    .where(queries.SUBSCRIBER.c.email == email)
                ).scalar_one()
            )
    finally:
        engine.dispose()


def next_due(db_url: str) -> datetime | None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return queries.next_due_time(conn)
    finally:
        engine.dispose()


def make_work(tmp_path: Path) -> Path:
    """A working folder with the example sequence and templates (what `init` copies)."""
    work = tmp_path / "work"
    for name in ("sequences", "templates"):
        shutil.copytree(EXAMPLES / name, work / name)
    (work / "nurture.toml").write_text('secret_key = "test-secret-not-a-placeholder"\n')
    return work


def edit_sequence(work: Path) -> None:
    """Insert 'intro' first and 'bonus' after 'three-models'."""
    path = work / "sequences" / "sales-process.yaml"
    text = path.read_text(encoding="utf-8")
    assert "steps:\n" in text and "  # 3. From idea" in text
    text = text.replace("steps:\n", "steps:\n" + INTRO, 1)
    text = text.replace("  # 3. From idea", BONUS + "  # 3. From idea", 1)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Path:
    """The four positions, the file just edited, at ``EDITED``."""
    work = make_work(tmp_path)
    add(work, db_url, END_ENROLLED, ("end@example.com", "Europe/Stockholm"))
    dispatch_in_process(work, db_url, END_ENROLLED, until=FRIDAY)  # the whole series
    assert enrollment_status(db_url, "end@example.com") == "completed"
    add(work, db_url, FRIDAY, ("mid@example.com", "Europe/Stockholm"),
        ("nyc@example.com", "America/New_York"))  # fmt: skip
    dispatch_in_process(work, db_url, FRIDAY, MONDAY)
    add(work, db_url, EDITED, ("new@example.com", "Europe/Stockholm"))
    assert [s for s, *_ in ledger(db_url, "mid@example.com")] == ["welcome", "three-models"]
    assert [s for s, *_ in ledger(db_url, "nyc@example.com")] == ["welcome"]
    assert ledger(db_url, "new@example.com") == []
    edit_sequence(work)
    return work


def plan(work: Path, db_url: str, *args: str) -> str:
    result = run("--now", EDITED.isoformat(), "plan", *args, cwd=work, db_url=db_url)
    assert result.returncode == 0, result.stderr
    return result.stdout


def group_of(report: dict[str, Any], email: str) -> dict[str, Any]:
    [sequence] = report["sequences"]
    [group] = [g for g in sequence["groups"] if email in {e["email"] for e in g["examples"]}]
    return group  # type: ignore[no-any-return]


def test_plan_says_a_subscriber_who_has_not_started_gets_the_inserted_steps(
    world: Path, db_url: str
) -> None:
    """Issue 10: plan said new@ "will not receive" 'intro' and 'bonus'; then
    they received both."""
    text = plan(world, db_url)
    lines = text.splitlines()
    [said] = [i for i, line in enumerate(lines) if "new@example.com" in line]
    about_new = lines[said - 1] + "\n" + lines[said]  # the group's sentence, then new@'s row
    assert "intro, bonus" not in about_new and "not receive" not in about_new, text
    assert "1 will get 'intro' next (a new step), first on Mon 2026-11-30 10:00 CET" in about_new
    assert "they will not receive 'intro' (before their position)" in text  # mid@, nyc@

    dispatch(world, db_url, EDITED)
    assert [step for step, *_ in ledger(db_url, "new@example.com")] == ["intro", "welcome"]


@pytest.mark.timeout(300)  # a dozen commands, each a fresh interpreter
def test_plan_agrees_with_the_dispatcher_at_every_position(world: Path, db_url: str) -> None:
    report = json.loads(plan(world, db_url, "--json", "--limit", "10"))
    new, nyc, mid = (group_of(report, f"{who}@example.com") for who in ("new", "nyc", "mid"))
    end = group_of(report, "end@example.com")

    # Not started: every step of the edited file lies ahead, 'intro' first, now.
    assert (new["effect"], new["step"], new["step_is"]) == ("send", "intro", "new")
    assert new["will_not_receive"] == [] and new["first_at_utc"] == "2026-11-30T09:00:00Z"
    # Between steps: 'intro' is before their position, so never sent.
    assert (nyc["step"], nyc["step_is"], nyc["will_not_receive"]) == (
        "three-models", "unchanged", ["intro"]
    )  # fmt: skip
    assert nyc["first_at"] == "2026-11-30T09:30:00-05:00"
    # 'bonus' goes out when their next email was due under the old file
    # ('choosing', Wed 09:30), not a day after 'three-models'.
    assert (mid["step"], mid["step_is"], mid["will_not_receive"]) == ("bonus", "new", ["intro"])
    assert mid["first_at"] == "2026-12-02T09:30:00+01:00"
    # At the end: a completed enrollment gets nothing more.
    assert (end["effect"], end["subscribers"], end["will_not_receive"]) == (
        "completed", 1, ["intro", "bonus"]
    )  # fmt: skip

    detail = json.loads(plan(world, db_url, "--subscriber", "MID@example.com", "--json"))
    [enrollment] = detail["enrollments"]
    promised = [(e["step"], e["at_utc"]) for e in enrollment["timeline"]]
    assert promised[0] == ("bonus", mid["first_at_utc"])
    assert enrollment["will_not_receive"] == ["intro"]

    # Each next email goes out at the time plan gave, not before.
    dispatch(world, db_url, utc(new["first_at_utc"]))
    dispatch(world, db_url, utc(nyc["first_at_utc"]))
    dispatch(world, db_url, utc(mid["first_at_utc"]) - timedelta(minutes=1))
    assert "bonus" not in [step for step, *_ in ledger(db_url, "mid@example.com")]
    dispatch(world, db_url, utc(mid["first_at_utc"]))
    for who, group in (("new", new), ("nyc", nyc), ("mid", mid)):
        sent = {step: at for step, status, _, at in ledger(db_url, f"{who}@example.com")}
        assert sent.get(group["step"]) == utc(group["first_at_utc"]), (who, sent)

    # The rest of the series, by the same dispatcher, until everyone is done.
    dispatch_in_process(world, db_url, utc(mid["first_at_utc"]), until=EDITED + timedelta(days=60))
    assert next_due(db_url) is None
    steps = {
        who: [step for step, *_ in ledger(db_url, f"{who}@example.com")]
        for who in ("new", "nyc", "mid", "end")
    }
    assert steps["new"] == [
        "intro", "welcome", "three-models", "bonus", "choosing", "case-study", "offer",
    ]  # fmt: skip
    assert "intro" not in steps["nyc"] and "bonus" in steps["nyc"]
    assert steps["end"] == ["welcome", "three-models", "choosing", "case-study", "offer"]
    # mid@'s whole series went out when `plan --subscriber` said it would.
    actual = [(step, at) for step, _, _, at in ledger(db_url, "mid@example.com")][2:]
    assert actual == [(step, utc(at)) for step, at in promised]
    assert "intro" not in steps["mid"]


# -- many subscribers: grouped by effect --------------------------------------------

MANY = 200  # enrolled on Friday, half in Stockholm and half in New York
LATE = 40  # enrolled at EDITED, not started


@pytest.fixture
def crowd(tmp_path: Path, db_url: str) -> Path:
    work = make_work(tmp_path)
    zones = ("Europe/Stockholm", "America/New_York")
    add(work, db_url, FRIDAY, *((f"s{n:03}@example.com", zones[n % 2]) for n in range(MANY)))
    dispatch_in_process(work, db_url, FRIDAY)
    add(work, db_url, EDITED, *((f"t{n:03}@example.com", zones[n % 2]) for n in range(LATE)))
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            insert(queries.SUPPRESSION),
            {"email": "t000@example.com", "reason": "hard bounce", "created_at": EDITED},
        )
    engine.dispose()
    edit_sequence(work)
    return work


def test_plan_groups_many_subscribers_by_effect(crowd: Path, db_url: str) -> None:
    text = plan(crowd, db_url)
    lines = text.splitlines()
    assert len(lines) < 30, text  # one row per subscriber on the old version before
    # Stockholm's 09:30 has passed without a dispatch: due at once, 10:00 CET.
    assert (
        f"{MANY} will get 'three-models' next, first on Mon 2026-11-30 10:00 CET, "
        "last on Mon 2026-11-30 09:30 EST; they will not receive 'intro' (before their position)"
    ) in text
    assert (
        f"{LATE - 1} will get 'intro' next (a new step), first on Mon 2026-11-30 10:00 CET, "
        "last on Mon 2026-11-30 08:00 EST"
    ) in text
    assert "1 will leave at their next turn (address suppressed)" in text
    assert f"… and {MANY - 3:,} more" in text  # three examples by default, earliest first
    examples = [line.split() for line in lines if line.strip().startswith("s0")]
    assert [words[0] for words in examples] == ["s000@example.com", "s002@example.com",
                                                "s004@example.com"]  # fmt: skip

    one = plan(crowd, db_url, "--sequence", "sales-process", "--limit", "1")
    assert len([line for line in one.splitlines() if "@example.com" in line]) == 3  # per group
    assert f"… and {MANY - 1:,} more" in one

    # In an 80-column terminal a long line wraps under its own indent; it
    # wrapped back to the first column, where it read as a line of its own.
    narrow = subprocess.run(
        [*NURTURE, "--now", EDITED.isoformat(), "plan"],
        cwd=crowd, env={**env(db_url), "COLUMNS": "80"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert narrow.returncode == 0, narrow.stderr
    shown = narrow.stdout.splitlines()
    after = shown[shown.index("  what happens next:") + 1 :]
    assert all(len(line) <= 80 for line in shown), narrow.stdout
    assert all(line.startswith("    ") for line in after if line and "every active" not in line), (
        narrow.stdout
    )
    first = next(i for i, line in enumerate(after) if "will get 'three-models' next" in line)
    assert after[first + 1].startswith("    "), narrow.stdout
    assert " ".join(" ".join(after[first : first + 3]).split()).startswith(
        f"{MANY} will get 'three-models' next, first on Mon 2026-11-30 10:00 CET, last on"
    )


def test_plan_json_has_the_documented_shape(crowd: Path, db_url: str) -> None:
    report = json.loads(plan(crowd, db_url, "--json", "--limit", "2"))
    assert set(report) == {"format", "now", "sequences"}
    assert (report["format"], report["now"]) == (1, "2026-11-30T09:00:00Z")
    [sequence] = report["sequences"]
    assert set(sequence) == {
        "sequence", "file_version", "paused", "active", "completed", "positions", "versions",
        "groups",
    }  # fmt: skip
    assert sequence["active"] == MANY + LATE
    assert sequence["positions"] == [
        {"step": None, "subscribers": LATE},
        {"step": "welcome", "subscribers": MANY},
    ]
    assert sum(group["subscribers"] for group in sequence["groups"]) == MANY + LATE
    first = sequence["groups"][0]
    assert set(first) == {
        "effect", "subscribers", "step", "step_is", "skipped", "will_not_receive", "reason",
        "first_at", "first_at_utc", "last_at", "last_at_utc", "examples",
    }  # fmt: skip
    assert (first["effect"], first["step"], first["subscribers"]) == ("send", "three-models", MANY)
    assert (first["step_is"], first["will_not_receive"]) == ("unchanged", ["intro"])
    [version] = sequence["versions"]
    assert (version["current"], version["active"]) == (False, MANY + LATE)
    assert version["changes"] == [
        {"kind": "added", "step": "intro", "detail": "first"},
        {"kind": "added", "step": "bonus", "detail": "after 'three-models'"},
    ]
    assert first["first_at_utc"] == "2026-11-30T09:00:00Z"
    assert first["last_at_utc"] == "2026-11-30T14:30:00Z"
    assert first["examples"] == [
        {"email": "s000@example.com", "position": "welcome",
         "at": "2026-11-30T10:00:00+01:00", "at_utc": "2026-11-30T09:00:00Z"},
        {"email": "s002@example.com", "position": "welcome",
         "at": "2026-11-30T10:00:00+01:00", "at_utc": "2026-11-30T09:00:00Z"},
    ]  # fmt: skip


def test_plan_for_one_subscriber_and_refusals(crowd: Path, db_url: str) -> None:
    one = plan(crowd, db_url, "--subscriber", "S001@example.com")
    assert "s001@example.com in sales-process: active, on version" in one
    assert "America/New_York" in one
    assert "welcome" in one and "sent" in one  # so far
    assert "will not receive: 'intro'" in one
    for step in ("three-models", "bonus", "choosing", "case-study", "offer"):
        assert step in one
    assert "Mon 2026-11-30 09:30 EST" in one

    unknown = run("--now", EDITED.isoformat(), "plan", "--sequence", "nope", cwd=crowd,
                  db_url=db_url)  # fmt: skip
    assert unknown.returncode == 1
    assert "no sequence 'nope'" in unknown.stderr
    nobody = run("--now", EDITED.isoformat(), "plan", "--subscriber", "nobody@example.com",
                 cwd=crowd, db_url=db_url)  # fmt: skip
    assert nobody.returncode == 1
    assert "nobody@example.com is not enrolled in any sequence" in nobody.stderr


def test_plan_says_a_step_whose_condition_fails_holds_the_subscriber(
    tmp_path: Path, db_url: str
) -> None:
    """A ``when`` that raises for someone pauses the sequence at that step (the
    dispatcher's Hold); plan said they "will complete without another email"."""
    work = make_work(tmp_path)
    path = work / "sequences" / "sales-process.yaml"
    text = path.read_text(encoding="utf-8")
    # Fine for the samples (no 'seats': the default 1); a string breaks '>'.
    condition = "    when: \"subscriber.attributes.get('seats', 1) > 0\"\n"
    text = text.replace("  - id: three-models\n", "  - id: three-models\n" + condition, 1)
    path.write_text(text, encoding="utf-8")
    runtime = build_runtime(_settings(work, db_url), FixedClock(FRIDAY))
    try:
        with session_factory(runtime.engine)() as session:
            for email, seats in (("odd@example.com", "many"), ("fine@example.com", 3)):
                add_subscriber(
                    session, email=email, name="Test Person", tz="Europe/Stockholm",
                    locale="en", tags=["b2b"], attributes={"seats": seats},
                    consent_source="test", now=FRIDAY, sequences=runtime.registry.sequences(),
                )  # fmt: skip
            session.commit()
    finally:
        runtime.close()
    dispatch_in_process(work, db_url, FRIDAY, FRIDAY)  # both get 'welcome'

    report = json.loads(plan(work, db_url, "--json"))
    held = group_of(report, "odd@example.com")
    assert (held["effect"], held["step"]) == ("held", "three-models"), held
    assert "'>' not supported" in held["reason"], held
    assert group_of(report, "fine@example.com")["effect"] == "send"
    text = plan(work, db_url)
    assert "1 will be held at 'three-models'" in text, text
    assert "complete without another email" not in text, text

    # And the dispatcher does hold them there, when the step is due.
    dispatch_in_process(work, db_url, MONDAY)
    assert [(step, status) for step, status, *_ in ledger(db_url, "odd@example.com")] == [
        ("welcome", "sent"),
        ("three-models", "retry"),
    ]
