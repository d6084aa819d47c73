"""What stops queued emails mid-pass: a refused key, a spent budget, an outage, a stop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nurture.errors import (
    AmbiguousSendError,
    AuthenticationError,
    PermanentSendError,
    TransientSendError,
)
from nurture.sending.guard import (
    HALTED,
    OUTAGE_AFTER,
    PAUSED,
    PROVIDER_DOWN,
    STOPPING,
    OutageBreaker,
    PassGuard,
)
from nurture.sending.outcomes import NotAttempted, SendOutcome, classify
from nurture.transports.base import SendResult

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
OK = SendResult("memory", "<1@x>")
DOWN = TransientSendError("503", status=503)
BAD = PermanentSendError("400", status=400)


class Policy:
    max_attempts = 3
    retry_base = timedelta(minutes=1)
    retry_max = timedelta(hours=1)


def guard(budget: int = 3) -> PassGuard:
    return PassGuard(budget)


def answer(g: PassGuard, outcome: SendOutcome, *, sequence_id: str, attempts: int) -> None:
    """The provider's answer for one email, with the verdict the dispatcher gives it."""
    verdict = classify(outcome, attempts=attempts, now=NOW, policy=Policy(), jitter=lambda: 0.0)
    g.record(outcome, verdict, sequence_id=sequence_id)


def test_nothing_holds_a_fresh_pass() -> None:
    assert guard().hold("s") is None
    assert guard().open


def test_a_refused_key_holds_everything_and_is_remembered() -> None:
    g = guard()
    refusal = AuthenticationError("401", status=401)
    answer(g, refusal, sequence_id="s", attempts=1)
    assert g.hold("s") is HALTED and g.hold("other") is HALTED
    assert g.refusal is refusal and not g.open


def test_the_error_budget_holds_only_its_sequence() -> None:
    g = guard(budget=2)
    answer(g, BAD, sequence_id="s", attempts=1)
    assert g.hold("s") is None
    answer(g, BAD, sequence_id="s", attempts=1)
    assert g.hold("s") is PAUSED
    assert g.hold("other") is None
    assert g.open  # other sequences go on


def test_a_success_resets_the_budget_count() -> None:
    g = guard(budget=2)
    g.failures["s"] = 1  # carried over from earlier passes
    answer(g, OK, sequence_id="s", attempts=1)
    answer(g, BAD, sequence_id="s", attempts=1)
    assert g.hold("s") is None and g.failures["s"] == 1


def test_a_transient_failure_spends_the_budget_only_when_it_gives_up() -> None:
    g = guard(budget=1)
    answer(g, DOWN, sequence_id="s", attempts=1)  # will be retried
    assert g.hold("s") is None
    answer(g, DOWN, sequence_id="s", attempts=Policy.max_attempts)  # gave up
    assert g.hold("s") is PAUSED


def test_the_budget_is_handed_over_for_saving_once_per_change() -> None:
    g = guard(budget=2)
    g.start_from({"s": 1, "quiet": 4})
    assert g.unsaved_budget() == []  # what the database holds already
    answer(g, BAD, sequence_id="s", attempts=1)
    answer(g, OK, sequence_id="s", attempts=1)  # spent at 2, then back to 0
    assert g.unsaved_budget() == [("s", 0, 2)]
    assert g.unsaved_budget() == []
    answer(g, BAD, sequence_id="s", attempts=1)
    assert g.unsaved_budget() == [("s", 1, None)]  # the pause is saved already
    assert g.last_error["s"] == "400"


def test_failures_in_a_row_across_sequences_mean_an_outage() -> None:
    g = guard(budget=1000)
    for number in range(OUTAGE_AFTER - 1):
        answer(
            g,
            DOWN if number % 2 else AmbiguousSendError("timeout"),
            sequence_id=f"s{number}",
            attempts=1,
        )
    assert g.hold("x") is None
    answer(g, RuntimeError("a transport bug"), sequence_id="y", attempts=1)
    assert g.outage and g.hold("x") is PROVIDER_DOWN and not g.open


def test_any_answer_from_the_provider_breaks_the_run() -> None:
    for reply in (OK, BAD):
        g = guard(budget=1000)
        for _ in range(OUTAGE_AFTER - 1):
            answer(g, DOWN, sequence_id="s", attempts=1)
        answer(g, reply, sequence_id="s", attempts=1)
        answer(g, DOWN, sequence_id="s", attempts=1)
        assert not g.outage


def test_not_attempted_emails_count_for_nothing() -> None:
    g = guard(budget=1)
    for _ in range(OUTAGE_AFTER + 5):
        answer(g, NotAttempted(), sequence_id="s", attempts=1)
    assert g.hold("s") is None and g.trouble == 0


def test_stopping_holds_last() -> None:
    g = guard()
    assert g.hold("s", stopping=True) is STOPPING
    answer(g, AuthenticationError("403", status=403), sequence_id="s", attempts=1)
    assert g.hold("s", stopping=True) is HALTED


def test_the_breaker_pauses_longer_while_the_provider_stays_down() -> None:
    breaker = OutageBreaker()
    pauses = []
    when = NOW
    for _ in range(7):
        g = guard()
        for _ in range(OUTAGE_AFTER):
            answer(g, DOWN, sequence_id="s", attempts=1)
        pause = breaker.after(g, when)
        assert pause is not None
        pauses.append(pause.total_seconds())
        assert breaker.holds(when + pause - timedelta(seconds=1))
        when += pause
        assert not breaker.holds(when)
    assert pauses == [30, 60, 120, 240, 480, 600, 600]


def test_a_pass_that_delivers_closes_the_breaker() -> None:
    breaker = OutageBreaker()
    down = guard()
    for _ in range(OUTAGE_AFTER):
        answer(down, DOWN, sequence_id="s", attempts=1)
    breaker.after(down, NOW)
    idle = guard()  # nothing was due: the breaker stays as it was
    assert breaker.after(idle, NOW + timedelta(minutes=1)) is None
    assert breaker.outages == 1
    up = guard()
    answer(up, OK, sequence_id="s", attempts=1)
    breaker.after(up, NOW + timedelta(minutes=2))
    assert breaker.outages == 0 and not breaker.holds(NOW)
