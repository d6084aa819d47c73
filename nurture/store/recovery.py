"""A dead worker's rows: what its expired claims left ``reserved`` or
``queued`` becomes ``unknown`` or due again, and the answers its send journal
kept are written."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.engine import Connection

from nurture.core.vocabulary import SendStatus
from nurture.store import journal
from nurture.store.batches import keys_present
from nurture.store.prepared import prepared
from nurture.store.queries import ENROLLMENT, SEND
from nurture.store.reservations import settle_from_journal


def reconcile(conn: Connection, now: datetime) -> tuple[int, int]:
    """Rows of enrollments whose claim expired (their worker died or gave up).

    * ``reserved`` with an expired lease: it may have reached the provider, so
      it becomes ``unknown`` (settled now) and is never resent automatically;
    * ``queued``: it never reached the provider, so it becomes due again as a
      ``retry`` due at once with no attempt spent. It is kept rather than
      deleted: its key is already in the rendered Message-ID and the row shows
      when it was first decided.

    Returns (unknown, due again).
    """
    unclaimed = select(ENROLLMENT.c.id).where(
        or_(ENROLLMENT.c.claimed_until.is_(None), ENROLLMENT.c.claimed_until < now)
    )
    recovered = _recover_journals(conn, now)
    unknown = conn.execute(
        update(SEND)
        .where(
            SEND.c.status == SendStatus.RESERVED,
            or_(SEND.c.lease_until.is_(None), SEND.c.lease_until < now),
            SEND.c.enrollment_id.in_(unclaimed),
        )
        .values(
            status=SendStatus.UNKNOWN,
            sent_at=now,
            lease_until=None,
            reason="the worker stopped during the send (lease expired): "
            "the provider may or may not have it; not resent",
        )
    )
    again = conn.execute(
        update(SEND)
        .where(and_(SEND.c.status == SendStatus.QUEUED, SEND.c.enrollment_id.in_(unclaimed)))
        .values(
            status=SendStatus.RETRY,
            next_attempt_at=now,
            lease_until=None,
            reason="not attempted: the worker stopped before sending it",
        )
    )
    return int(unknown.rowcount or 0), int(again.rowcount or 0) + recovered


def _recover_journals(conn: Connection, now: datetime) -> int:
    """Expired ``reserved`` rows of journaled batches (SQLite files, the serial
    sender; see :mod:`nurture.store.journal`): those answered are settled
    with their answer, those never attempted are due again; those whose call
    started without an answer are left for ``unknown``. Returns how many are
    due again."""
    directory = journal.directory_for(conn.engine)
    if directory is None or not directory.is_dir():
        return 0
    expired = {
        row.key: row.claimed_by
        for row in conn.execute(
            select(SEND.c.key, ENROLLMENT.c.claimed_by)
            .join(ENROLLMENT, ENROLLMENT.c.id == SEND.c.enrollment_id)
            .where(
                SEND.c.status == SendStatus.RESERVED,
                or_(SEND.c.lease_until.is_(None), SEND.c.lease_until < now),
                or_(ENROLLMENT.c.claimed_until.is_(None), ENROLLMENT.c.claimed_until < now),
            )
        )
    }
    found = journal.recover(directory, expired)
    if found.answers:
        settle_from_journal(conn, found.answers.values())
    again = 0
    if found.again:
        again = prepared(conn, "journal_again", lambda: (_AGAIN, ["_key", "_now"])).run(
            conn, [{"_key": key, "_now": now} for key in sorted(found.again)]
        )
    for path in found.fenced:
        path.unlink(missing_ok=True)
    for path, keys in found.idle:
        if not keys or not keys_present(conn, sorted(keys), SendStatus.RESERVED):
            path.unlink(missing_ok=True)
    return again


_AGAIN = (
    update(SEND)
    .where(SEND.c.key == bindparam("_key"), SEND.c.status == SendStatus.RESERVED)
    .values(
        status=SendStatus.RETRY,
        next_attempt_at=bindparam("_now", type_=SEND.c.next_attempt_at.type),
        attempts=SEND.c.attempts - 1,
        lease_until=None,
        reason="not attempted: the worker stopped before sending it",
    )
)
