""" "Send me a test": one step of a sequence, rendered for a sample subscriber
and sent to an admin's own address through the real transport.

A test is marked as one — its subject starts with ``[Test] `` and it carries
``X-Nurture-Test: 1`` — and it has no ledger row: it never shows in the send
log or the funnels, and the provider's events about it (our send id is a
``test.`` key no ledger row has) attach to no send. The admin action record
keeps who sent which step to where, and when.

The subscriber is the sequence's first sample (``<id>.sample.yaml`` beside the
file, else the built-in one, as ``nurture preview`` picks it) with the admin's
address, so the links in the test (unsubscribe, preferences) are the admin's.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from sqlmodel import Session

from nurture.core.loader import LoadedSequence
from nurture.core.model import Step
from nurture.core.rendering import ComposedEmail
from nurture.core.samples import samples_for
from nurture.core.subscriber import Subscriber
from nurture.errors import NurtureError
from nurture.store.admins import add_action
from nurture.transports.base import OutgoingEmail

__all__ = ["TEST_HEADER", "TEST_PREFIX", "TestSendError", "TestSent", "send_test"]

TEST_PREFIX = "[Test] "
TEST_HEADER = "X-Nurture-Test"

Compose = Callable[[LoadedSequence, Step, Subscriber, str, datetime], ComposedEmail]


class TestSendError(NurtureError):
    """No such sequence or step, or no address to send the test to."""

    __test__ = False  # not a pytest class


@dataclass(frozen=True)
class TestSent:
    __test__ = False

    key: str
    to_email: str
    subject: str


def mark_as_test(email: ComposedEmail) -> ComposedEmail:
    """``email`` with the test's subject prefix and header."""
    rendered = replace(
        email.rendered,
        subject=TEST_PREFIX + email.rendered.subject,
        headers={**email.rendered.headers, TEST_HEADER: "1"},
    )
    return replace(email, rendered=rendered)


def send_test(
    session: Session,
    *,
    sequences: Mapping[str, LoadedSequence],
    compose: Compose,
    send: Callable[[OutgoingEmail], object],
    sequence_id: str,
    step_id: str,
    admin: str,
    to_email: str | None,
    now: datetime,
) -> TestSent:
    """Render and send the test; record the action in ``session`` (the caller
    commits). Transport errors (:class:`~nurture.errors.SendError`) propagate,
    and then nothing is recorded."""
    if not to_email:
        raise TestSendError(
            f"admin {admin!r} has no email address to send a test to: an admin gets one "
            "when created with `nurture admin create-user NAME --email ADDRESS`"
        )
    loaded = sequences.get(sequence_id)
    if loaded is None:
        raise TestSendError(f"no sequence {sequence_id!r}")
    step = next((s for s in loaded.sequence.steps if s.id == step_id), None)
    if step is None:
        raise TestSendError(f"no step {step_id!r} in {sequence_id}")
    person = replace(samples_for(loaded.sequence, loaded.path)[0], email=to_email)
    key = f"test.{secrets.token_hex(8)}"
    composed = mark_as_test(compose(loaded, step, person, key, now))
    send(OutgoingEmail(composed, key, sequence_id, step_id, to_email))
    add_action(
        session,
        at=now,
        admin=admin,
        action="test_send",
        target=f"{sequence_id}/{step_id}",
        detail={"to": to_email, "key": key, "version": loaded.version},
    )
    return TestSent(key, to_email, composed.subject)
