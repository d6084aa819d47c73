"""Sending with concurrency 1: every provider call in the caller's thread.

One small transaction per email
(:class:`~nurture.store.reservations.SerialLedger`) reserves it and settles
the previous email's answer, so no answer waits unwritten while the next
email goes out. On a SQLite file the batch is reserved in one commit instead
and each call's start and answer go to a send journal
(:mod:`nurture.store.journal`), which a reconciler fences and reads back if
the worker dies. Enrollments move on in one transaction per batch, or every
:data:`CONFIRM_EVERY` answers or :data:`CONFIRM_AFTER` seconds, whichever
comes first (the planner reads the ledger, so a crash before that loses
nothing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from pathlib import Path

from sqlalchemy.engine import Connection

from nurture.core.batch import PlannedEmail
from nurture.sending.answers import Answer
from nurture.sending.sender import Sender
from nurture.store import journal, reservations

log = logging.getLogger("nurture.sending.sender")

CONFIRM_EVERY = 200
"""Answers confirmed in one transaction at most (and at the end of a batch)."""

CONFIRM_AFTER = 0.5
"""Seconds: answers are confirmed at least this often as well, so a slow
provider does not hold a batch's enrollments back."""


class SerialSender(Sender):
    """Sends one email at a time; see the module docstring."""

    def _set_up(self) -> None:
        self._journal_dir = journal.directory_for(self.engine)
        self._journal_ok: bool | None = None

    def drain(self) -> None:
        """Confirm the answers not yet confirmed (every email handed over was
        sent when :meth:`send` returned)."""
        self._confirm(self._take_answers())

    def _held_else_renew(self, email: PlannedEmail, conn: Connection, *, reserved: bool) -> bool:
        """Before a serial send: True if the guard holds ``email`` back (its
        not-attempted answer is recorded); else renew the leases if due."""
        held = self._held(email)
        if held is not None:
            self._answers.append(self._answer(email, held, reserved=reserved))
            return True
        if self._renewal_due():
            with conn.begin():
                self._maybe_renew(conn)
        return False

    def send(self, emails: list[PlannedEmail]) -> None:
        """Send a written batch's queued emails, one after the other."""
        if not emails:
            return
        if self._journal_dir is not None and self._journal_usable(self._journal_dir):
            self._send_journaled(emails, self._journal_dir)
            return
        with (
            reservations.SerialLedger(self.engine, self.worker_id, self.transport.name) as ledger,
            self.engine.connect() as conn,
        ):
            confirmed = time.monotonic()
            # The last answer, written with the next reservation (one commit)
            # unless a confirm comes first.
            unwritten: Answer | None = None
            for email in emails:
                if self._held_else_renew(email, conn, reserved=False):
                    continue
                settle = None if unwritten is None else self._settle_row(unwritten)
                reserved = ledger.step(settle, email.key, self.lease_until())
                if unwritten is not None:
                    unwritten.written, unwritten.id_written = True, ledger.writes_message_ids
                    unwritten = None
                if not reserved:
                    log.warning(
                        "email %s not sent: another worker took its enrollment (lease expired)",
                        email.key,
                    )
                    continue
                unwritten = self._deliver(email)
                self._answers.append(unwritten)
                if len(self._answers) >= CONFIRM_EVERY or (
                    time.monotonic() - confirmed >= CONFIRM_AFTER
                ):
                    self._confirm(self._take_answers(), conn)
                    unwritten, confirmed = None, time.monotonic()
            self._confirm(self._take_answers(), conn)

    def _journal_usable(self, directory: Path) -> bool:
        """Can journals be written there? If not (a read-only folder), the
        serial path commits per email instead, and says so once."""
        if self._journal_ok is None:
            try:
                directory.mkdir(mode=0o700, exist_ok=True)
                self._journal_ok = os.access(directory, os.W_OK | os.X_OK)
            except OSError:
                self._journal_ok = False
            if not self._journal_ok:
                log.warning("cannot write send journals in %s: one commit per email", directory)
        return self._journal_ok

    def _send_journaled(self, emails: list[PlannedEmail], directory: Path) -> None:
        """Concurrency 1 on a SQLite file: the batch is reserved in one commit
        and each call's start and answer go to a send journal (see
        :mod:`nurture.store.journal`) instead of a commit per email."""
        wanted: list[PlannedEmail] = []
        for email in emails:
            held = self._held(email)
            if held is not None:
                self._answers.append(self._answer(email, held, reserved=False))
            else:
                wanted.append(email)
        if not wanted:
            self._confirm(self._take_answers())
            return
        book = journal.SendJournal(directory, self.worker_id)
        pending: deque[PlannedEmail] = deque()
        committed = False
        try:
            with self.engine.connect() as conn:
                try:
                    book.reserving(e.key for e in wanted)
                    with conn.begin():
                        pending.extend(self._reserve(conn, wanted))
                    self._send_pending(book, pending, conn)
                finally:
                    # Also after an error: what was never attempted goes back
                    # to queued, the answers are confirmed. Once fenced, all of
                    # it is the reconciler's.
                    if not book.fenced:
                        self._confirm_journaled(book, conn, [e.key for e in pending])
                        committed = True
        finally:
            # Kept unless all of it is committed: the reconciler reads it once
            # the lease has run out.
            book.close(remove=committed)

    def _send_pending(
        self, book: journal.SendJournal, pending: deque[PlannedEmail], conn: Connection
    ) -> None:
        confirmed = time.monotonic()
        unjournaled: Answer | None = None  # the last answer, journaled with the next call
        while pending:
            email = pending[0]
            if self._held_else_renew(email, conn, reserved=True):
                pending.popleft()
                continue
            last = None if unjournaled is None else self._journal_values(unjournaled)
            try:
                book.record(last, email.key)
            except journal.Fenced:
                break
            pending.popleft()
            unjournaled = self._deliver(email)
            self._answers.append(unjournaled)
            if len(self._answers) >= CONFIRM_EVERY or (
                time.monotonic() - confirmed >= CONFIRM_AFTER
            ):
                if not self._confirm_journaled(book, conn, []):
                    break
                unjournaled, confirmed = None, time.monotonic()
        if unjournaled is not None:
            with contextlib.suppress(journal.Fenced):
                book.record(self._journal_values(unjournaled), None)
        if book.fenced:
            log.warning(
                "this batch was taken over (its lease ran out): %d email(s) left to the "
                "worker that reconciled it",
                len(pending),
            )
            self._answers.clear()

    def _confirm_journaled(
        self, book: journal.SendJournal, conn: Connection, give_back: list[str]
    ) -> bool:
        """Confirm the answers and give back ``give_back`` in one transaction
        that commits only if no reconciler fenced the journal first (checked
        after the writes, when this transaction holds SQLite's write lock: a
        reconciler commits before it, and so fenced before it, or after it).
        False if fenced (nothing written)."""
        answers = self._take_answers()
        try:
            self._confirm(answers, conn, give_back=give_back, fence=book)
        except journal.Fenced:
            return False
        return True

    def _journal_values(self, answer: Answer) -> dict[str, object]:
        return reservations.settle_values_for_journal(self._settle_row(answer))
