"""The one way out: unsubscribing (all email or one sequence), being blocked by
the provider, and resubscribing — what each changes, and that repeating it
changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from nurture.audience.leaving import (
    Block,
    Unsubscribe,
    block,
    block_all,
    leave_all,
    resubscribe,
    unsubscribe,
)
from nurture.audience.suppression import is_suppressed
from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus, SubscriberStatus
from nurture.store.tables import EnrollmentRow, EventRow, SendRow, SubscriberRow, SuppressionRow

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _subscriber(session: Session, email: str = "karin@example.com") -> SubscriberRow:
    row = SubscriberRow(email=email, created_at=NOW, updated_at=NOW)
    session.add(row)
    session.flush()
    return row


def _enrollment(session: Session, subscriber: SubscriberRow, sequence_id: str) -> EnrollmentRow:
    assert subscriber.id is not None
    row = EnrollmentRow(
        subscriber_id=subscriber.id, sequence_id=sequence_id, sequence_version="v1",
        enrolled_at=NOW, next_due_at=NOW, updated_at=NOW,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def _send(session: Session, enrollment: EnrollmentRow, step: str, status: SendStatus) -> SendRow:
    assert enrollment.id is not None
    row = SendRow(
        key=f"{enrollment.id}-{step}", enrollment_id=enrollment.id,
        subscriber_id=enrollment.subscriber_id, sequence_id=enrollment.sequence_id,
        sequence_version="v1", step_id=step, status=status, due_at=NOW, decided_at=NOW,
        next_attempt_at=NOW + timedelta(minutes=5) if status == SendStatus.RETRY else None,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def _events(session: Session, kind: EventKind) -> list[EventRow]:
    return list(session.exec(select(EventRow).where(EventRow.kind == kind)))


def test_unsubscribing_from_all_ends_everything_waiting_and_suppresses(session: Session) -> None:
    karin = _subscriber(session)
    welcome = _enrollment(session, karin, "welcome")
    offer = _enrollment(session, karin, "offer")
    queued = _send(session, welcome, "hello", SendStatus.QUEUED)
    retry = _send(session, offer, "pitch", SendStatus.RETRY)
    sent = _send(session, welcome, "intro", SendStatus.SENT)
    reserved = _send(session, offer, "intro", SendStatus.RESERVED)

    left = unsubscribe(session, karin, now=NOW, via="one-click")

    assert left.ended == ("offer", "welcome") and left.status_changed and left.suppressed
    assert karin.status == SubscriberStatus.UNSUBSCRIBED
    for enrollment in (welcome, offer):
        session.refresh(enrollment)
        assert enrollment.status == EnrollmentStatus.EXITED
        assert enrollment.next_due_at is None
        assert enrollment.status_reason == "unsubscribed (one-click)"
    for row, status in (
        (queued, SendStatus.SKIPPED), (retry, SendStatus.SKIPPED),
        (sent, SendStatus.SENT), (reserved, SendStatus.RESERVED),
    ):  # fmt: skip
        session.refresh(row)
        assert row.status == status
    assert is_suppressed(session, "karin@example.com")
    [event] = _events(session, EventKind.UNSUBSCRIBED)
    assert event.subscriber_id == karin.id and event.payload["via"] == "one-click"


def test_unsubscribing_twice_changes_and_records_nothing_more(session: Session) -> None:
    karin = _subscriber(session)
    _enrollment(session, karin, "welcome")
    assert unsubscribe(session, karin, now=NOW).changed
    again = unsubscribe(session, karin, now=NOW + timedelta(minutes=1))
    assert not again.changed
    assert len(_events(session, EventKind.UNSUBSCRIBED)) == 1


def test_leaving_one_sequence_keeps_the_rest(session: Session) -> None:
    karin = _subscriber(session)
    welcome = _enrollment(session, karin, "welcome")
    offer = _enrollment(session, karin, "offer")
    pending = _send(session, offer, "pitch", SendStatus.QUEUED)

    left = unsubscribe(session, karin, now=NOW, sequence_id="offer")

    assert left.ended == ("offer",) and not left.suppressed
    session.refresh(welcome)
    session.refresh(offer)
    session.refresh(pending)
    assert welcome.status == EnrollmentStatus.ACTIVE
    assert offer.status == EnrollmentStatus.EXITED
    assert pending.status == SendStatus.SKIPPED
    assert karin.status == SubscriberStatus.ACTIVE
    assert not is_suppressed(session, "karin@example.com")


def test_a_bounce_blocks_and_a_resubscribe_cannot_undo_it(session: Session) -> None:
    karin = _subscriber(session)
    _enrollment(session, karin, "welcome")
    left = block(
        session, karin.email, karin, status=SubscriberStatus.BOUNCED,
        reason="hard bounce: 550 no such user", source="sendgrid", now=NOW,
    )  # fmt: skip
    assert left.ended == ("welcome",) and left.suppressed
    assert karin.status == SubscriberStatus.BOUNCED

    assert not resubscribe(session, karin, now=NOW, consent={})
    assert karin.status == SubscriberStatus.BOUNCED
    assert is_suppressed(session, "karin@example.com")


def test_an_address_we_do_not_hold_is_still_suppressed(session: Session) -> None:
    left = block(
        session, "gone@example.com", None, status=SubscriberStatus.COMPLAINED,
        reason="spam report", source="sendgrid", now=NOW,
    )  # fmt: skip
    assert left.suppressed
    assert is_suppressed(session, "gone@example.com")


def test_resubscribing_after_an_unsubscribe_records_fresh_consent(session: Session) -> None:
    karin = _subscriber(session)
    unsubscribe(session, karin, now=NOW)
    later = NOW + timedelta(days=3)

    assert resubscribe(
        session, karin, now=later,
        consent={"consent_at": later, "consent_source": "preferences", "consent_ip": "203.0.113.9"},
    )  # fmt: skip

    assert karin.status == SubscriberStatus.ACTIVE
    assert karin.consent_at == later and karin.consent_ip == "203.0.113.9"
    assert not is_suppressed(session, "karin@example.com")
    assert len(_events(session, EventKind.SUBSCRIBED)) == 1
    assert not resubscribe(session, karin, now=later, consent={})  # already back


# -- block_all: many blocks in a few queries, the same as one call each ----------


def _blocking_world(session: Session, prefix: str) -> list[Block]:
    """Subscribers in every state a block meets, and the blocks of one post."""
    active = _subscriber(session, f"{prefix}-active@example.com")
    for sequence in ("welcome", "offer"):
        enrollment = _enrollment(session, active, sequence)
        for step, status in (("a", SendStatus.QUEUED), ("b", SendStatus.RETRY)):
            _send(session, enrollment, step, status)
        _send(session, enrollment, "c", SendStatus.RESERVED)
    left = _subscriber(session, f"{prefix}-left@example.com")
    _enrollment(session, left, "welcome")
    unsubscribe(session, left, now=NOW)
    unconfirmed = _subscriber(session, f"{prefix}-new@example.com")
    unconfirmed.status = SubscriberStatus.UNCONFIRMED
    block(
        session, f"{prefix}-old@example.com", None, status=SubscriberStatus.BOUNCED,
        reason="earlier", source="manual", now=NOW,
    )  # fmt: skip
    later = NOW + timedelta(minutes=1)
    twice = _subscriber(session, f"{prefix}-twice@example.com")
    _enrollment(session, twice, "welcome")
    then_bounced = _subscriber(session, f"{prefix}-then-bounced@example.com")
    _enrollment(session, then_bounced, "offer")
    return [
        Block(active.email, active, SubscriberStatus.BOUNCED, "bounce: 550", later),
        Block(active.email, active, SubscriberStatus.COMPLAINED, "spam report", later),
        Block(left.email, left, SubscriberStatus.BOUNCED, "x" * 600, later),
        Block(unconfirmed.email, unconfirmed, SubscriberStatus.INVALID, "dropped", later),
        Block(f"{prefix}-gone@example.com", None, SubscriberStatus.BOUNCED, "bounce", later),
        Block(f"{prefix}-gone@example.com", None, SubscriberStatus.COMPLAINED, "spam", NOW),
        Block(f"{prefix}-old@example.com", None, SubscriberStatus.BOUNCED, "again", later),
        Unsubscribe(twice, later, "sendgrid", {"n": 1}),
        Unsubscribe(twice, later, "sendgrid", {"n": 2}),
        Unsubscribe(active, later, "sendgrid"),
        Unsubscribe(then_bounced, NOW, "link"),
        Block(then_bounced.email, then_bounced, SubscriberStatus.BOUNCED, "bounce", later),
    ]


ENROLLMENT_FIELDS = ("sequence_id", "status", "status_reason", "next_due_at", "updated_at")
SEND_FIELDS = ("sequence_id", "step_id", "status", "reason", "next_attempt_at", "sent_at")


def _fields(row: object, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(getattr(row, name) for name in names)


def _state(session: Session, prefix: str) -> dict[str, list[Any]]:
    """Everything a block writes, for the addresses starting with ``prefix``."""
    session.flush()

    def mine(email: str) -> bool:
        return email.startswith(f"{prefix}-")

    def name(email: str) -> str:
        return email.removeprefix(f"{prefix}-")

    subscribers = {
        row.id: name(row.email) for row in session.exec(select(SubscriberRow)) if mine(row.email)
    }
    return {
        "subscribers": sorted(
            (name(r.email), r.status, r.status_reason, r.updated_at)
            for r in session.exec(select(SubscriberRow))
            if mine(r.email)
        ),
        "enrollments": sorted(
            (subscribers[r.subscriber_id], *_fields(r, ENROLLMENT_FIELDS))
            for r in session.exec(select(EnrollmentRow))
            if r.subscriber_id in subscribers
        ),
        "sends": sorted(
            (subscribers[r.subscriber_id], *_fields(r, SEND_FIELDS))
            for r in session.exec(select(SendRow))
            if r.subscriber_id in subscribers
        ),
        "suppressions": sorted(
            (name(r.email), r.reason, r.source, r.created_at)
            for r in session.exec(select(SuppressionRow))
            if mine(r.email)
        ),
    }


def test_block_all_changes_what_one_block_each_would(session: Session) -> None:
    one_by_one = [
        block(
            session,
            item.email,
            item.subscriber,
            status=item.status,
            reason=item.reason,
            source="sendgrid",
            now=item.now,
        )
        if isinstance(item, Block)
        else unsubscribe(session, item.subscriber, now=item.now, via=item.via, payload=item.payload)
        for item in _blocking_world(session, "one")
    ]
    together = leave_all(session, _blocking_world(session, "all"), source="sendgrid")

    assert together == one_by_one
    assert _state(session, "all") == _state(session, "one")
    # And it did something: the case is not one where nothing changes.
    assert [left.changed for left in together] == [
        True,
        False,
        True,
        True,
        True,
        False,
        False,
        True,
        False,
        False,
        True,
        True,
    ]
    assert together[0].ended == ("offer", "welcome")
    state = _state(session, "all")
    assert {row[0]: row[1] for row in state["subscribers"]} == {
        "active@example.com": SubscriberStatus.BOUNCED,
        "left@example.com": SubscriberStatus.BOUNCED,
        "new@example.com": SubscriberStatus.INVALID,
        "twice@example.com": SubscriberStatus.UNSUBSCRIBED,
        "then-bounced@example.com": SubscriberStatus.BOUNCED,
    }
    assert {row[2] for row in state["enrollments"]} == {EnrollmentStatus.EXITED}
    # One event per unsubscribe that changed something, with its payload.
    events = [e for e in _events(session, EventKind.UNSUBSCRIBED) if e.payload.get("via")]
    mine = {row.id for row in session.exec(select(SubscriberRow)) if row.email.startswith("all-")}
    found = [(e.payload.get("n"), e.payload["scope"]) for e in events if e.subscriber_id in mine]
    assert sorted(found, key=repr) == [(1, "all"), (None, "all"), (None, "all")]
    # What waited is skipped; what was in flight stays in flight.
    assert {(row[2], row[3]) for row in state["sends"]} == {
        ("a", SendStatus.SKIPPED),
        ("b", SendStatus.SKIPPED),
        ("c", SendStatus.RESERVED),
    }
    assert {row[0]: (row[1][:7], row[2]) for row in state["suppressions"]} == {
        "active@example.com": ("bounce:", "sendgrid"),
        "left@example.com": ("unsubsc", "unsubscribe"),
        "new@example.com": ("dropped", "sendgrid"),
        "gone@example.com": ("bounce", "sendgrid"),
        "old@example.com": ("earlier", "manual"),
        "twice@example.com": ("unsubsc", "unsubscribe"),
        "then-bounced@example.com": ("unsubsc", "unsubscribe"),
    }


def test_block_all_of_nothing_changes_nothing(session: Session) -> None:
    karin = _subscriber(session)
    _enrollment(session, karin, "welcome")

    assert block_all(session, [], source="sendgrid") == []
    assert karin.status == SubscriberStatus.ACTIVE
    assert not is_suppressed(session, karin.email)
