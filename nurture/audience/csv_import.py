"""Importing subscribers from a CSV file: :func:`import_csv`.

A shell module like :mod:`nurture.audience.subscribers`: every row is checked by
:meth:`~nurture.audience.input.SubscriberInput.parse` and goes through
:func:`~nurture.audience.subscribers.upsert_subscribers`, so an imported row is
added exactly as :func:`~nurture.audience.subscribers.add_subscriber` adds one. Rows are upserted in
chunks, one transaction each, so :func:`import_csv` commits (unlike the
service's functions, which only flush).

Errors: :class:`ImportFileError` (a file that cannot be imported at all);
a bad row is reported in :class:`ImportReport` and skipped.

One bad row never costs the others: input checks catch nearly everything, and
should the database still refuse a chunk, its rows are retried one by one and
only the refused row is reported. A row's error names its line and field and
never quotes another row (a database error's text lists a whole chunk's
values, so it is not passed on).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from nurture.audience.consent import Consent
from nurture.audience.input import InvalidSubscriberError, SubscriberInput
from nurture.audience.subscribers import upsert_subscribers
from nurture.core.loader import LoadedSequence
from nurture.core.vocabulary import SubscriberStatus
from nurture.errors import NurtureError

__all__ = ["IMPORT_CHUNK", "TAG_SEPARATORS", "ImportFileError", "ImportReport", "import_csv"]

_T = TypeVar("_T")

IMPORT_CHUNK = 500
"""Rows per transaction in :func:`import_csv`: one commit per row is slow on
SQLite (an fsync each), one for the whole file holds a write lock for minutes."""


class ImportFileError(NurtureError):
    """A whole CSV file cannot be imported (unreadable, not UTF-8, bad header)."""


_KNOWN_COLUMNS = {"email", "name", "first_name", "tz", "timezone", "locale", "tags"}
_ATTR_PREFIX = "attr."
TAG_SEPARATORS = (";", "|")
"""Tags in one cell are separated by ``;`` or ``|``; never ``,``, which
separates columns (Excel in many European locales writes ``;`` between columns:
the column delimiter is detected from the header, and such cells are quoted)."""


@dataclass
class ImportReport:
    """What :func:`import_csv` did. ``errors``: (1-based file line, message)."""

    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    enrolled: int = 0

    @property
    def total(self) -> int:
        return self.imported + self.updated + self.unchanged + len(self.errors)


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    # itertools.batched is Python 3.12+.
    iterator = iter(items)
    while chunk := tuple(islice(iterator, size)):
        yield chunk


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        # utf-8-sig drops the byte-order mark Excel writes at the start.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ImportFileError(f"{path}:{line}: not UTF-8 (save the file as 'CSV UTF-8')") from exc


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _columns(path: Path, header: list[str]) -> list[str]:
    names = [cell.strip().lower() for cell in header]
    problems: list[str] = []
    for name in names:
        if name.startswith(_ATTR_PREFIX):
            if not name.removeprefix(_ATTR_PREFIX):
                problems.append("column 'attr.' needs a name after the dot")
        elif name not in _KNOWN_COLUMNS:
            problems.append(
                f"unknown column {name!r} (keep it as an attribute with attr.{name})"
                if name
                else "a column has no name"
            )
    duplicates = sorted({n for n in names if names.count(n) > 1 and n})
    if duplicates:
        problems.append(f"duplicate column(s): {', '.join(duplicates)}")
    if "tz" in names and "timezone" in names:
        problems.append("use either 'tz' or 'timezone', not both")
    if "email" not in names:
        problems.append("no 'email' column")
    if problems:
        raise ImportFileError(f"{path}:1: " + "; ".join(problems))
    return names


def _row_input(columns: list[str], cells: list[str]) -> SubscriberInput:
    if len(cells) > len(columns):
        raise InvalidSubscriberError(
            f"{len(cells)} cells but the header has {len(columns)} columns"
        )
    values = dict(zip(columns, (c.strip() for c in cells), strict=False))
    tag_text = values.get("tags", "")
    for separator in TAG_SEPARATORS[1:]:
        tag_text = tag_text.replace(separator, TAG_SEPARATORS[0])
    attributes = {
        key.removeprefix(_ATTR_PREFIX): value
        for key, value in values.items()
        if key.startswith(_ATTR_PREFIX) and value
    }
    return SubscriberInput.parse(
        email=values.get("email", ""),
        name=values.get("name", ""),
        first_name=values.get("first_name"),
        timezone=values.get("tz") or values.get("timezone"),
        locale=values.get("locale"),
        tags=tag_text.split(TAG_SEPARATORS[0]),
        attributes=attributes,
    )


def _refused(exc: DBAPIError) -> str:
    """A database refusal of one row, without the values (the statement's parameters)."""
    driver_error = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
    return f"the database refused this row ({driver_error})"


def import_csv(
    session: Session,
    path: Path,
    *,
    sequences: Mapping[str, LoadedSequence],
    now: datetime,
    consent_source: str = "import",
    consent_text: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = IMPORT_CHUNK,
) -> ImportReport:
    """Import subscribers from a UTF-8 CSV file (a BOM is fine), upserting by address.

    Columns (header required, any order, case-insensitive): ``email`` (required),
    ``name``, ``first_name``, ``tz`` (or ``timezone``), ``locale``, ``tags``
    (see :data:`TAG_SEPARATORS`) and ``attr.<key>`` for attributes. Empty cells
    mean "not given". A bad row is reported with its file line (the header is
    line 1) and skipped; the good rows are imported and enrolled like
    :func:`add_subscriber`. Commits every ``chunk_size`` rows and calls
    ``progress(rows_done, rows_total)`` after each chunk.

    Raises :class:`ImportFileError` (before importing anything) for a file that
    cannot be read, is not UTF-8 or has a bad header. A database error mid-way
    leaves the chunks before it committed; as a re-import changes nothing,
    running it again finishes the job.
    """
    consent = Consent.parse(consent_source, consent_text)
    text = _decode(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text.split("\n", 1)[0]))
    records: list[tuple[int, list[str]]] = []
    try:
        header = next(reader, None)
        if header is None:
            raise ImportFileError(f"{path}:1: the file is empty (expected a header with 'email')")
        columns = _columns(path, header)
        line = reader.line_num + 1
        for cells in reader:
            # A quoted cell may span lines: report the record's first line.
            if any(cell.strip() for cell in cells):
                records.append((line, cells))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise ImportFileError(f"{path}:{reader.line_num}: {exc}") from exc

    report = ImportReport()
    done = 0

    def upsert(rows: Sequence[SubscriberInput]) -> None:
        result = upsert_subscribers(
            session,
            rows,
            consent=consent,
            status=SubscriberStatus.ACTIVE,
            now=now,
            sequences=sequences,
        )
        session.commit()
        report.imported += result.created
        report.updated += result.updated
        report.unchanged += result.unchanged
        report.enrolled += len(result.enrollments)

    for chunk in _chunks(records, chunk_size):
        valid: list[tuple[int, SubscriberInput]] = []
        for line, cells in chunk:
            try:
                valid.append((line, _row_input(columns, cells)))
            except InvalidSubscriberError as exc:
                report.errors.append((line, str(exc)))
        if valid:
            try:
                upsert([data for _, data in valid])
            except DBAPIError:
                # Something the input checks let through: find the row, keep the rest.
                session.rollback()
                for line, data in valid:
                    try:
                        upsert([data])
                    except DBAPIError as exc:
                        session.rollback()
                        report.errors.append((line, _refused(exc)))
        done += len(chunk)
        if progress is not None:
            progress(done, len(records))
    if progress is not None and not records:
        progress(0, 0)
    return report
