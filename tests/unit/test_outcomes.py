"""The retry policy: every kind of transport answer maps to one ledger verdict."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from nurture.errors import (
    AmbiguousSendError,
    AuthenticationError,
    PermanentSendError,
    TransientSendError,
)
from nurture.sending.outcomes import NotAttempted, SendOutcome, Verdict, backoff, classify
from nurture.transports.base import SendResult

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    retry_base: timedelta = timedelta(minutes=1)
    retry_max: timedelta = timedelta(minutes=10)


def verdict(outcome: SendOutcome, attempts: int = 1, jitter: float = 1.0) -> Verdict:
    return classify(outcome, attempts=attempts, now=NOW, policy=Policy(), jitter=lambda: jitter)


def test_sent() -> None:
    result = verdict(SendResult("memory", "<id@x>"))
    assert (result.status, result.attempts, result.counts_as_failure) == ("sent", 1, False)


def test_429_honours_the_reset_time() -> None:
    result = verdict(TransientSendError("429", status=429, retry_after=42.0))
    assert result.status == "retry"
    assert result.next_attempt_at == NOW + timedelta(seconds=42)


def test_5xx_backs_off_exponentially_with_jitter_then_gives_up() -> None:
    first = verdict(TransientSendError("500"), attempts=1, jitter=1.0)
    second = verdict(TransientSendError("500"), attempts=2, jitter=0.0)
    assert first.next_attempt_at == NOW + timedelta(minutes=1)
    assert second.next_attempt_at == NOW + timedelta(minutes=1)  # 2 min x 0.5
    last = verdict(TransientSendError("500"), attempts=3)
    assert last.status == "failed" and last.counts_as_failure
    assert last.reason == "gave up after 3 attempts: 500"


def test_backoff_is_capped() -> None:
    assert backoff(20, None, Policy(), lambda: 1.0) == timedelta(minutes=10)
    assert backoff(1, 0.0, Policy(), lambda: 1.0) == timedelta(seconds=1)


@pytest.mark.parametrize("outcome", [AuthenticationError("401"), NotAttempted()])
def test_not_sent_does_not_count_as_an_attempt(outcome: SendOutcome) -> None:
    result = verdict(outcome, attempts=2)
    assert (result.status, result.attempts) == ("retry", 1)


def test_permanent_and_invalid_address() -> None:
    result = verdict(PermanentSendError("bad", status=400, invalid_address=True))
    assert (result.status, result.invalid_address, result.counts_as_failure) == (
        "failed",
        True,
        True,
    )


def test_ambiguous_and_unexpected_are_unknown() -> None:
    ambiguous = verdict(AmbiguousSendError("timed out"))
    assert (ambiguous.status, ambiguous.unexpected) == ("unknown", False)
    bug = verdict(KeyError("boom"))
    assert (bug.status, bug.unexpected) == ("unknown", True)


@pytest.mark.parametrize("jitter", [0.0, 1.0])
def test_the_default_policy_outlasts_a_provider_outage_of_a_day(jitter: float) -> None:
    # "A provider outage delays emails, never drops them": with the shipped
    # defaults, an email failing transiently on every attempt is still retried
    # more than a day (and gives up within about three) after its first try.
    from nurture.app.runtime import policy_from
    from nurture.app.settings import Settings

    policy = policy_from(Settings())
    when, attempts = NOW, 1
    while True:
        result = classify(
            TransientSendError("503", status=503),
            attempts=attempts,
            now=when,
            policy=policy,
            jitter=lambda: jitter,
        )
        if result.status != "retry":
            break
        assert result.next_attempt_at is not None
        when, attempts = result.next_attempt_at, attempts + 1
    assert result.status == "failed" and attempts == policy.max_attempts
    assert timedelta(days=1) < when - NOW < timedelta(days=3)
