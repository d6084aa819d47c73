"""What needs an admin: ``failed`` and ``unknown`` sends, and paused sequences
(``/admin/problems`` and ``GET /admin/api/problems``).

The actions are the command line's, over the same services, so the page and
the CLI cannot disagree:

* an ``unknown`` send is settled by :func:`nurture.sending.resolve.resolve_in`
  (what ``nurture sends resolve`` runs): mark as sent, resend once, give up —
  with the same checks, refusals and ledger columns (``resolution``,
  ``resolved_by``, ``resolved_at``);
* a paused sequence is resumed by
  :func:`nurture.store.queries.resume_sequence` (what ``nurture resume``
  runs).

Each action is also recorded in ``admin_action`` (who, what, when), in the
transaction that does it: a refused action records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine

from nurture.errors import NurtureError
from nurture.sending.resolve import Resolution, resolve_in
from nurture.store import admins, queries
from nurture.store import problems as store
from nurture.store.db import session_factory
from nurture.store.problems import PROBLEM_STATUSES, PausedSequence, ProblemSend
from nurture.store.resolve import UnknownSend

__all__ = [
    "DEFAULT_LIMIT",
    "NotPausedError",
    "Problems",
    "load",
    "resolve",
    "resume",
]

DEFAULT_LIMIT = 200


class NotPausedError(NurtureError):
    """The sequence to resume is not paused (nothing was changed)."""


@dataclass(frozen=True)
class Problems:
    """The page's (and the API's) content."""

    sends: list[ProblemSend]
    paused: list[PausedSequence]
    limit: int


def load(
    engine: Engine,
    *,
    status: str | None = None,
    sequence: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Problems:
    """The newest ``limit`` failed and unknown sends (only ``status`` when it
    is one of them; only ``sequence`` when given), and every paused sequence."""
    statuses = [status] if status in PROBLEM_STATUSES else list(PROBLEM_STATUSES)
    with engine.connect() as conn:
        sends = store.problem_sends(conn, statuses=statuses, sequence=sequence, limit=limit)
        paused = store.paused(conn)
    return Problems(sends, paused, limit)


def resolve(
    engine: Engine,
    send_id: int,
    resolution: Resolution,
    *,
    why: str,
    admin: str,
    now: datetime,
) -> UnknownSend:
    """Settle one ``unknown`` send as ``admin``, as ``nurture sends resolve``
    does; raises :class:`~nurture.sending.resolve.ResolveError` (nothing
    changed) when it cannot be."""
    with session_factory(engine)() as session:
        [settled] = resolve_in(
            session.connection(),
            [str(send_id)],
            all_unknown=False,
            resolution=resolution,
            why=why,
            by=admin,
            now=now,
        )
        admins.add_action(
            session,
            at=now,
            admin=admin,
            action=f"send {resolution.value}",
            target=f"send {settled.id} ({settled.sequence_id}/{settled.step_id})",
            detail={"send_id": settled.id, "key": settled.key, "why": why.strip()},
        )
        session.commit()
    return settled


def resume(engine: Engine, sequence_id: str, *, admin: str, now: datetime) -> None:
    """Resume a paused sequence as ``admin``, as ``nurture resume`` does;
    :class:`NotPausedError` when it is not paused."""
    with session_factory(engine)() as session:
        reason = queries.paused_sequences(session.connection()).get(sequence_id)
        if not queries.resume_sequence(session.connection(), sequence_id, now):
            raise NotPausedError(f"{sequence_id} is not paused")
        admins.add_action(
            session,
            at=now,
            admin=admin,
            action="sequence resume",
            target=sequence_id,
            detail={"paused_reason": reason or ""},
        )
        session.commit()
