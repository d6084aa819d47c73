"""The serial sender's send journal, for SQLite databases in a file.

With one send at a time the ledger needs a durable mark right before each
provider call ("this one is in flight") and the answer right after it.
Committing both to SQLite per email made the commit the hot path's largest
cost, and with several workers on one file every email also took the
database's write lock. The journal moves those two marks into an append-only
file of the worker's own, beside the database; SQLite sees one commit that
reserves a whole batch and the usual batched confirms.

A journal is one file per batch, ``<database>.send-journal/<worker>-<id>.log``,
of lines, each appended by one ``write`` (``O_APPEND``: appends by two
processes never interleave within a line):

* ``R key key ...``: the keys about to be reserved (written before the
  reservation commits, so a reserved row of this batch is always named);
* ``S key``: the provider call for ``key`` starts now;
* ``A {json}``: the answer for a key (the ledger values to write);
* ``F``: a fence, appended by a reconciler that took the batch over.

**Fencing.** A reconciler only touches rows whose lease expired, but their
worker may be alive and late (a long pause). Before reading a journal, the
reconciler appends ``F``; it trusts only the lines before the first ``F``.
The worker checks after each append that the file is exactly as long as
what it wrote; if not, it was fenced and sends nothing more. Whichever
order the two appends land in, an ``S`` line either is before the fence
(the reconciler sees the call as possibly made) or is not trusted and the
worker does not make the call.

**Recovery** (:func:`read_for_recovery`): a reserved key with an answer is
settled with it; one with ``S`` and no answer may have reached the provider
and becomes ``unknown``; the others never left and are due again. A crash
thus leaves at most one ambiguous row, as the per-email commit did.

Process crashes lose nothing (the kernel keeps what was written); like
SQLite's ``synchronous=NORMAL`` in WAL mode, the journal is not flushed to
disk per email, so a power cut may lose the last answers, which then read as
due again or ``unknown``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

SUFFIX = ".send-journal"
"""The journal folder is the database file's path with this suffix."""

STALE_AFTER = 3600.0
"""Seconds without a write after which a journal whose rows are all settled
is removed by the reconciler (a worker that stopped between its last confirm
and removing its journal)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class Fenced(Exception):
    """A reconciler took this journal's batch over: send nothing more."""


def directory_for(engine: Engine) -> Path | None:
    """Where journals of ``engine``'s database live; None unless the database
    is a SQLite file (PostgreSQL and in-memory SQLite commit per email)."""
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database + SUFFIX)


def _answer_line(values: dict[str, Any]) -> bytes:
    return b"A " + json.dumps(values, separators=(",", ":"), default=str).encode() + b"\n"


_numbers = itertools.count(1)


class SendJournal:
    """One batch's journal, written by the worker that sends it."""

    def __init__(self, directory: Path, worker_id: str) -> None:
        directory.mkdir(mode=0o700, exist_ok=True)
        number = next(_numbers)
        name = f"{_UNSAFE.sub('_', worker_id)[:80]}-{number:09d}-{uuid.uuid4().hex[:8]}.log"
        self.path = directory / name
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._size = 0
        self.fenced = False
        self._append(f"W {number} {worker_id}\n".encode())

    def reserving(self, keys: Iterable[str]) -> None:
        """Name the keys about to be reserved (before the reservation commits)."""
        self._append(("R " + " ".join(keys) + "\n").encode())

    def record(self, answer: dict[str, Any] | None, sending: str | None) -> None:
        """Append ``answer`` (the ledger values of the last call) and/or the
        start of the call for ``sending``, in one write. Raises
        :class:`Fenced` if a reconciler appended a fence: then the call for
        ``sending`` must not be made."""
        data = b"" if answer is None else _answer_line(answer)
        if sending is not None:
            data += b"S " + sending.encode() + b"\n"
        if data:
            self._append(data)

    def _append(self, data: bytes) -> None:
        if self.fenced:
            raise Fenced(str(self.path))
        written = os.write(self._fd, data)
        if written != len(data):
            raise OSError(f"short write to the send journal {self.path}")
        self._size += written
        if os.fstat(self._fd).st_size != self._size:
            self.fenced = True
            raise Fenced(str(self.path))

    def overtaken(self) -> bool:
        """Has a reconciler fenced this journal?"""
        if not self.fenced and os.fstat(self._fd).st_size != self._size:
            self.fenced = True
        return self.fenced

    def close(self, *, remove: bool) -> None:
        """Close; ``remove`` once every answer and give-back is committed.
        A fenced journal is left for the reconciler that fenced it."""
        os.close(self._fd)
        if remove and not self.fenced:
            self.path.unlink(missing_ok=True)


@dataclass
class Read:
    """What a journal says, up to its first fence."""

    path: Path
    worker: str | None = None
    number: int = 0
    reserved: set[str] = field(default_factory=set)
    started: set[str] = field(default_factory=set)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    fenced: bool = False


def _parse(path: Path, data: bytes) -> Read:
    found = Read(path)
    for raw in data.split(b"\n")[:-1]:  # the last piece is empty or an unfinished line
        kind, _, rest = raw.partition(b" ")
        if kind == b"F":
            found.fenced = True
            break
        text = rest.decode("utf-8", "replace")
        if kind == b"W":
            number, _, worker = text.partition(" ")
            found.number, found.worker = (int(number) if number.isdigit() else 0), worker
        elif kind == b"R":
            found.reserved.update(text.split())
        elif kind == b"S":
            found.started.add(text.strip())
        elif kind == b"A":
            try:
                values = json.loads(text)
            except ValueError:
                continue  # cannot happen with whole lines; such a key reads as unknown
            if isinstance(values, dict) and isinstance(values.get("_key"), str):
                found.answers[values["_key"]] = values
    return found


def _peek(path: Path) -> Read | None:
    try:
        return _parse(path, path.read_bytes())
    except FileNotFoundError:
        return None


def _fence_and_read(path: Path) -> Read | None:
    """Fence a journal (its worker sends nothing more) and read what it wrote
    before the first fence (None if it is gone)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return None
    try:
        os.write(fd, b"F\n")
    finally:
        os.close(fd)
    return _peek(path)


@dataclass
class Recovery:
    """What :func:`recover` decided for the expired reserved rows it found in
    journals. Keys in neither set started their call without an answer:
    they stay for the caller's ``unknown``."""

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    again: set[str] = field(default_factory=set)
    fenced: list[Path] = field(default_factory=list)
    idle: list[tuple[Path, set[str]]] = field(default_factory=list)


def recover(directory: Path | None, expired: dict[str, str | None]) -> Recovery:
    """Decide the expired ``reserved`` rows (key -> the worker whose claim
    expired) that a journal of that worker names: fence those journals, then
    per key, by the worker's latest journal that started its call: its
    answer, or nothing (``unknown``); never started: due again. Also lists
    journals no one has written to for :data:`STALE_AFTER` seconds (with
    their reserved keys) so the caller can remove those whose rows are settled."""
    found = Recovery()
    if directory is None or not directory.is_dir():
        return found
    by_worker: dict[str, list[Read]] = {}
    for path in sorted(directory.glob("*.log")):
        read = _peek(path)
        if read is None or read.worker is None:
            continue
        if not (read.reserved & expired.keys()) and _stale(path):
            found.idle.append((path, read.reserved))
        by_worker.setdefault(read.worker, []).append(read)
    for worker, reads in by_worker.items():
        keys = {key for key, owner in expired.items() if owner == worker}
        fenced = []
        for read in reads:
            if read.reserved & keys:
                again = _fence_and_read(read.path)
                if again is not None:
                    fenced.append(again)
                    found.fenced.append(read.path)
        fenced.sort(key=lambda r: r.number)
        for key in keys:
            if not any(key in r.reserved for r in fenced):
                continue  # no journal of its worker names it: unknown
            started = [r for r in fenced if key in r.started]
            if not started:
                found.again.add(key)
            elif key in started[-1].answers:
                found.answers[key] = started[-1].answers[key]
    return found


def _stale(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER
    except FileNotFoundError:
        return False
