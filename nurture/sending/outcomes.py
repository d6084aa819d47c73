"""What a transport's answer means for the ledger: the retry policy as a pure
function, so every branch is tested without a database or a provider.

=================================  ==========  ==================================
the transport...                   ledger row  then
=================================  ==========  ==================================
returned a SendResult              sent        the next step is scheduled
raised TransientSendError          retry       again after backoff (a 429's reset
(429, 5xx, connection refused)                 time wins), until ``max_attempts``;
                                               then failed
raised AuthenticationError         retry       dispatching halts; nothing is lost
(401/403), or was never called
raised PermanentSendError          failed      counts against the error budget;
(400, 413, invalid address)                    an invalid address exits
raised AmbiguousSendError          unknown     never resent blindly (the provider
(timeout after sending) or                     may have it); the sequence goes on
anything unexpected
=================================  ==========  ==================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from nurture.core.vocabulary import SendStatus
from nurture.errors import (
    AmbiguousSendError,
    AuthenticationError,
    PermanentSendError,
    TransientSendError,
)
from nurture.transports.base import SendResult


class RetrySettings(Protocol):
    @property
    def max_attempts(self) -> int: ...
    @property
    def retry_base(self) -> timedelta: ...
    @property
    def retry_max(self) -> timedelta: ...


@dataclass(frozen=True)
class NotAttempted:
    """The transport was not called (dispatching halted before this email)."""

    reason: str = "not attempted: dispatching halted"


SendOutcome = SendResult | BaseException | NotAttempted


@dataclass(frozen=True)
class Verdict:
    status: SendStatus  # sent, retry, failed or unknown
    reason: str | None
    attempts: int
    next_attempt_at: datetime | None = None
    invalid_address: bool = False
    counts_as_failure: bool = False
    unexpected: bool = False  # a transport raised something outside the tree: a bug


def backoff(
    attempts: int,
    retry_after: float | None,
    policy: RetrySettings,
    jitter: Callable[[], float],
) -> timedelta:
    """Exponential backoff with jitter; a provider's ``retry_after`` wins.

    Never less than a second: a dispatch pass's clock is fixed, so a retry due
    "now" would spin in the same pass.
    """
    if retry_after is not None:
        return timedelta(seconds=max(retry_after, 1.0))
    base = policy.retry_base.total_seconds() * (2 ** (max(attempts, 1) - 1))
    capped = min(base, policy.retry_max.total_seconds())
    # Jitter between half and all of the delay spreads a burst of retries out.
    return timedelta(seconds=max(capped * (0.5 + 0.5 * jitter()), 1.0))


def classify(
    outcome: SendOutcome,
    *,
    attempts: int,
    now: datetime,
    policy: RetrySettings,
    jitter: Callable[[], float],
) -> Verdict:
    """The ledger verdict for one send; ``attempts`` counts this one."""
    if isinstance(outcome, SendResult):
        return Verdict(SendStatus.SENT, None, attempts)
    if isinstance(outcome, NotAttempted | AuthenticationError):
        # Not sent: the attempt does not count.
        reason = outcome.reason if isinstance(outcome, NotAttempted) else str(outcome)
        earlier = attempts - 1
        when = now + backoff(earlier, 0.0, policy, jitter)
        return Verdict(SendStatus.RETRY, reason, earlier, next_attempt_at=when)
    if isinstance(outcome, TransientSendError):
        if attempts < policy.max_attempts:
            when = now + backoff(attempts, outcome.retry_after, policy, jitter)
            return Verdict(SendStatus.RETRY, str(outcome), attempts, next_attempt_at=when)
        reason = f"gave up after {attempts} attempts: {outcome}"
        return Verdict(SendStatus.FAILED, reason, attempts, counts_as_failure=True)
    if isinstance(outcome, PermanentSendError):
        return Verdict(
            SendStatus.FAILED,
            str(outcome),
            attempts,
            invalid_address=outcome.invalid_address,
            counts_as_failure=True,
        )
    unexpected = not isinstance(outcome, AmbiguousSendError)
    return Verdict(
        SendStatus.UNKNOWN, f"outcome unknown: {outcome}", attempts, unexpected=unexpected
    )
