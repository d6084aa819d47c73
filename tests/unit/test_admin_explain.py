"""The explain timeline from plain values: edited files, failures, retries and
a sequence without a file (the integration tests drive the common paths
through real dispatch passes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from nurture.admin.timeline import EnrollmentExplain, StepLine, explain_enrollment
from nurture.core.loader import LoadedSequence, parse_sequence
from nurture.core.subscriber import Subscriber
from nurture.store.explain import EnrollmentRecord, LedgerRecord
from tests.factories import OFFER, sequence_dict

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)
VIEW = Subscriber("a@example.com", "Alice", timezone="UTC")


def loaded(*step_ids: str) -> LoadedSequence:
    steps: list[dict[str, Any]] = [
        {"id": step_id, "wait": "1 day", "subject": "Hi", "template": "welcome.md"}
        for step_id in step_ids
    ]
    steps[-1] = {**steps[-1], "template": "offer.html", "offer": dict(OFFER)}
    data = sequence_dict(id="seq", timezone="UTC", steps=steps)
    found, problems = parse_sequence(json.dumps(data), "seq.yaml")  # JSON is YAML
    assert found is not None, problems
    return found


def row(
    step: str, status: str, due: datetime, settled: datetime | None, **more: Any
) -> LedgerRecord:
    values: dict[str, Any] = {
        "id": 1, "key": f"k-{step}", "step_id": step, "status": status, "reason": None,
        "due_at": due, "decided_at": due, "sent_at": settled, "attempts": 0,
        "next_attempt_at": None, "subject": None, "sequence_version": "v1", "resolution": None,
    }  # fmt: skip
    values.update(more)
    return LedgerRecord(**values)


def enrollment(*ledger: LedgerRecord, next_due: datetime | None = None) -> EnrollmentRecord:
    return EnrollmentRecord(1, "seq", "v1", "active", None, None, T0, next_due, {}, ledger)


def lines(explained: EnrollmentExplain) -> dict[str, StepLine]:
    return {line.step: line for line in explained.steps}


def test_an_edited_file_shows_removed_and_passed_over_steps() -> None:
    record = enrollment(row("a", "sent", T0, T0), row("old", "sent", T0 + DAY, T0 + DAY))
    seq = loaded("intro", "a", "b", "c")
    shown = lines(explain_enrollment(record, seq, VIEW, (), T0 + DAY + timedelta(hours=1)))
    assert list(shown) == ["intro", "a", "b", "c", "old"]
    assert shown["intro"].state == "not sent" and "before the subscriber's position" in (
        shown["intro"].why
    )
    assert shown["old"].state == "sent" and not shown["old"].in_file
    assert "no longer in the file" in shown["old"].why
    # 'b' counts from the last step decided ('old', due T0 + 1 day).
    assert shown["b"].state == "pending" and shown["b"].at == T0 + 2 * DAY
    assert "after 'old' was due" in shown["b"].timing
    assert shown["c"].projected and shown["c"].at == T0 + 3 * DAY


def test_failures_and_unknown_outcomes_say_what_is_known() -> None:
    record = enrollment(
        row("a", "failed", T0, T0, reason="could not render: boom"),
        row("b", "unknown", T0 + DAY, T0 + DAY, reason="timeout after sending"),
    )
    shown = lines(explain_enrollment(record, loaded("a", "b", "c"), VIEW, (), T0 + DAY))
    assert (shown["a"].state, shown["a"].why) == ("failed", "could not render: boom")
    assert shown["b"].state == "unknown"
    assert "timeout after sending" in shown["b"].why and "nurture sends resolve" in shown["b"].why
    assert shown["c"].state == "pending" and shown["c"].at == T0 + 2 * DAY


def test_a_step_waiting_for_its_retry_is_due_at_the_retry() -> None:
    retry_at = T0 + DAY + timedelta(hours=3)
    record = enrollment(
        row("a", "sent", T0, T0),
        row(
            "b",
            "retry",
            T0 + DAY,
            None,
            attempts=1,
            next_attempt_at=retry_at,
            reason="provider said 429",
        ),
        next_due=retry_at,
    )
    explained = explain_enrollment(
        record, loaded("a", "b", "c"), VIEW, (), T0 + DAY + timedelta(hours=1)
    )
    shown = lines(explained)
    assert shown["b"].state == "pending" and shown["b"].at == retry_at
    assert "waiting for attempt 2 after: provider said 429" in shown["b"].why
    assert explained.next_due_at == retry_at
    # b goes out 3 hours late: c's wait counts from then, as the dispatcher's does.
    assert shown["c"].at == retry_at + DAY
    assert "counted from when 'b' went out late" in shown["c"].timing


def test_a_sequence_without_a_file_shows_its_ledger_and_says_nothing_is_sent() -> None:
    record = enrollment(row("a", "sent", T0, T0))
    explained = explain_enrollment(record, None, VIEW, (), T0 + DAY)
    assert [(line.step, line.state) for line in explained.steps] == [("a", "sent")]
    assert any("no valid file" in note for note in explained.notes)


def test_a_condition_that_fails_holds_the_step_and_says_so() -> None:
    data = loaded("a", "b", "c")
    broken = data.sequence.model_copy(
        update={"steps": [data.sequence.steps[0].model_copy(update={"when": "1 / 0"}),
                          *data.sequence.steps[1:]]}
    )  # fmt: skip
    held = LoadedSequence(broken, data.path, data.display, data.positions, data.version)
    shown = lines(explain_enrollment(enrollment(), held, VIEW, (), T0 + DAY))
    assert shown["a"].state == "held" and "nurture resume seq" in shown["a"].why
    assert shown["b"].state == "not reached" and "held at 'a'" in shown["b"].why
