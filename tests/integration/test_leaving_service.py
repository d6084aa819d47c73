"""The one way out: unsubscribing (all email or one sequence), being blocked by
the provider, and resubscribing — what each changes, and that repeating it
changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import Session, select

from nurture.audience.leaving import block, resubscribe, unsubscribe
from nurture.audience.suppression import is_suppressed
from nurture.core.vocabulary import EnrollmentStatus, EventKind, SendStatus, SubscriberStatus
from nurture.store.tables import EnrollmentRow, EventRow, SendRow, SubscriberRow

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
