"""Importing subscribers from a CSV file: :func:`import_csv`.

A shell module like :mod:`nurture.audience.subscribers`: every row is checked by
:meth:`~nurture.audience.input.SubscriberInput.parse` and goes through
:func:`~nurture.audience.subscribers.bulk_upsert_subscribers` (the rules of
:func:`~nurture.audience.subscribers.upsert_subscribers`, with new subscribers
inserted and enrolled as plain values, in bulk), so an imported row is added
exactly as :func:`~nurture.audience.subscribers.add_subscriber` adds one. Rows are
upserted in chunks, one transaction each, so :func:`import_csv` commits (unlike
the service's functions, which only flush). The file is streamed, twice: memory
holds one chunk and each address's first line, whatever the file's size.

**Columns.** The header names the columns, in any order. The usual names for
the subscriber's fields are understood, whatever their case, spaces, dashes
and underscores: ``email`` (also ``E-post``, ``Email Address``,
``email_address``), ``name`` (``Namn``, ``Full Name``), ``first_name``
(``First Name``, ``Förnamn``), ``last_name`` (``Last Name``, ``Efternamn``:
with ``first_name`` it makes the name when there is no ``name`` column), ``tz``
or ``timezone``, ``locale`` (``language``) and ``tags`` (``TAGS``, ``Taggar``),
so Mailchimp's and Kit's exports import as they are. ``attr.<key>`` is the
attribute ``key``. **Any other column is kept as an attribute** named after
its header (``Company Size`` -> ``company_size``), and the report says so
(:attr:`ImportReport.notes`); a column without a name is ignored, with a note.
Only a file nothing can be read from is refused: no email column, two
columns for one field, not UTF-8.

**Duplicates.** An address on several lines (in any case or spacing) is one
subscriber: the later rows are merged into it like a re-add, and each is
reported in :attr:`ImportReport.duplicates` with the line it repeats.

Errors: :class:`ImportFileError` (a file that cannot be imported at all);
a bad row is reported in :class:`ImportReport` and skipped, a record longer
than :data:`RECORD_LIMIT` over its lines too.

One bad row never costs the others: input checks catch nearly everything, and
should the database still refuse a chunk, its rows are retried one by one and
only the refused row is reported. A row's error names its line and field and
never quotes another row (a database error's text lists a whole chunk's
values, so it is not passed on).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from nurture.audience.consent import Consent
from nurture.audience.csv_records import (
    ImportFileError,
    Record,
    read_csv,
)
from nurture.audience.enrollment import triggered_on_subscribe
from nurture.audience.input import (
    LIMITS,
    TAG_SEPARATORS,
    InvalidSubscriberError,
    SubscriberInput,
)
from nurture.audience.subscribers import bulk_upsert_subscribers
from nurture.core.loader import LoadedSequence
from nurture.core.vocabulary import SubscriberStatus
from nurture.store.db import refresh_statistics
from nurture.store.queries import ENROLLMENT, SUBSCRIBER

__all__ = ["IMPORT_CHUNK", "TAG_SEPARATORS", "ImportFileError", "ImportReport", "import_csv"]

_T = TypeVar("_T")

IMPORT_CHUNK = 2000
"""Rows per transaction in :func:`import_csv`: one commit per row is slow on
SQLite (an fsync each), one for the whole file holds a write lock for minutes
(and memory); 2,000 rows take a fraction of a second."""

STATISTICS_AFTER = 1000
"""Rows an import must write (new, updated or enrolled) before it refreshes
PostgreSQL's planner statistics of the tables it filled."""


@dataclass
class ImportReport:
    """What :func:`import_csv` did.

    ``errors``: (1-based file line, message) of the rows skipped.
    ``duplicates``: (line, the earlier line with the same address) of the rows
    merged into an earlier one. ``notes``: how the header was read (columns
    kept as attributes, columns ignored). ``enrollments``: new enrollments by
    sequence id. ``no_trigger``: subscribers whose tags start no sequence.
    """

    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    enrolled: int = 0
    duplicates: list[tuple[int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    enrollments: Counter[str] = field(default_factory=Counter)
    no_trigger: int = 0

    @property
    def total(self) -> int:
        return self.imported + self.updated + self.unchanged + len(self.errors)


def _chunks(items: Iterable[_T], size: int) -> Iterator[Sequence[_T]]:
    # itertools.batched is Python 3.12+.
    iterator = iter(items)
    while chunk := tuple(islice(iterator, size)):
        yield chunk


_ATTR_PREFIX = "attr."

# Header names as people and other tools write them, by field. A header is
# matched case-insensitively, ignoring spaces, dashes, dots and underscores
# (:func:`_squash`): "E-post", "Email Address" (Mailchimp), "email_address",
# "First Name", "first_name" (Kit) ...
_FIELD_NAMES: Mapping[str, tuple[str, ...]] = {
    "email": ("email", "emailaddress", "mail", "epost", "epostadress", "emailadress"),
    "name": ("name", "fullname", "namn"),
    "first_name": ("firstname", "fname", "givenname", "förnamn"),
    "last_name": ("lastname", "lname", "surname", "familyname", "efternamn"),
    "timezone": ("tz", "timezone", "tidszon"),
    "locale": ("locale", "language", "lang", "språk"),
    "tags": ("tags", "tag", "taggar", "labels"),
}
_FIELDS = {alias: field for field, aliases in _FIELD_NAMES.items() for alias in aliases}


def _squash(header: str) -> str:
    return re.sub(r"[\W_]+", "", header.casefold())


def _attribute_name(header: str) -> str:
    """An unknown column's attribute: ``Company Size`` -> ``company_size``."""
    return re.sub(r"[\W_]+", "_", header.strip().casefold()).strip("_")


@dataclass(frozen=True)
class _Columns:
    """What each column of the file holds: a field, an attribute, or nothing.

    Each as ``(index, name)`` pairs in column order, which every row reads."""

    field_cells: tuple[tuple[int, str], ...]  # field names: see _FIELD_NAMES
    attribute_cells: tuple[tuple[int, str], ...]
    count: int
    notes: tuple[str, ...]  # how unknown and nameless columns were read


MAX_COLUMNS = 1000
"""The most columns a file's header may have: exports from CRMs carry a few
hundred properties, mostly empty; a row keeps at most 50 attributes."""

_NOTE_NAMES = 20
"""How many kept columns the note names before it says how many more."""


def _columns(path: Path, header: list[str]) -> _Columns:
    if len(header) > MAX_COLUMNS:
        raise ImportFileError(
            f"{path}:1: the header has {len(header):,} columns, more than {MAX_COLUMNS:,}: "
            f"keep the columns you need (a row keeps at most {LIMITS['attributes']} attributes)"
        )
    fields: dict[int, str] = {}
    attributes: dict[int, str] = {}
    kept: list[str] = []
    ignored: list[str] = []
    problems: list[str] = []
    for index, cell in enumerate(header):
        written = cell.strip()
        if written.lower().startswith(_ATTR_PREFIX):
            name = written[len(_ATTR_PREFIX) :].strip().lower()
            if name:
                attributes[index] = name
            else:
                problems.append("column 'attr.' needs a name after the dot")
        elif (field_name := _FIELDS.get(_squash(written))) is not None:
            fields[index] = field_name
        elif (name := _attribute_name(written)) and len(name) <= LIMITS["attribute_key"]:
            attributes[index] = name
            kept.append(f"{written!r} as {name!r}")
        else:
            ignored.append(str(index + 1))
    for field_name in _FIELD_NAMES:
        holders = [header[i].strip() for i, f in fields.items() if f == field_name]
        if len(holders) > 1:
            problems.append(
                f"duplicate column(s): {field_name} ({', '.join(repr(h) for h in holders)}): "
                "keep one"
            )
    duplicates = sorted(n for n, seen in Counter(attributes.values()).items() if seen > 1)
    if duplicates:
        problems.append(f"duplicate column(s) for attribute(s): {', '.join(duplicates)}")
    if "email" not in fields.values():
        problems.append("no 'email' column")
    if problems:
        raise ImportFileError(f"{path}:1: " + "; ".join(problems))
    notes: list[str] = []
    if kept:
        more = len(kept) - _NOTE_NAMES
        named = ", ".join(kept[:_NOTE_NAMES]) + (f" and {more:,} more" if more > 0 else "")
        notes.append(f"kept as attributes: {named}")
    if ignored:
        notes.append(f"ignored: column(s) {', '.join(ignored)} (no usable name)")
    return _Columns(
        tuple(sorted(fields.items())), tuple(sorted(attributes.items())), len(header), tuple(notes)
    )


def _row_input(columns: _Columns, cells: list[str]) -> SubscriberInput:
    given = len(cells)
    if given > columns.count:
        raise InvalidSubscriberError(f"{given} cells but the header has {columns.count} columns")
    if given < columns.count:  # a short row: the missing cells are empty
        cells = cells + [""] * (columns.count - given)
    values = dict.fromkeys(_FIELD_NAMES, "")
    for index, field_name in columns.field_cells:
        values[field_name] = cells[index].strip()
    attributes = {
        name: text for index, name in columns.attribute_cells if (text := cells[index].strip())
    }
    name = values["name"] or " ".join(p for p in (values["first_name"], values["last_name"]) if p)
    return SubscriberInput.parse(
        email=values["email"],
        name=name,
        first_name=values["first_name"],
        timezone=values["timezone"],
        locale=values["locale"],
        tags=[values["tags"]],
        attributes=attributes,
    )


@contextmanager
def _reader(path: Path) -> Iterator[tuple[_Columns, Iterator[Record]]]:
    """The file's columns and its non-blank records with their first line, streamed."""
    with read_csv(path) as (header, records):
        yield _columns(path, header), records


def _check(path: Path) -> tuple[_Columns, int]:
    """Read the whole file once without keeping it: its columns and record count,
    or :class:`ImportFileError` for a file that cannot be imported."""
    with _reader(path) as (columns, records):
        return columns, sum(1 for _ in records)


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

    Columns: see the module doc (``email`` is required; tags are separated by
    :data:`TAG_SEPARATORS`). Empty cells mean "not given". A bad row is
    reported with its file line (the header is line 1) and skipped; the good
    rows are imported and enrolled like :func:`add_subscriber`. Commits every
    ``chunk_size`` rows and calls ``progress(rows_done, rows_total)`` after
    each chunk.

    Raises :class:`ImportFileError` (before importing anything) for a file that
    cannot be read, is not UTF-8 or has a header nothing can be read from. A
    database error mid-way leaves the chunks before it committed; as a
    re-import changes nothing, running it again finishes the job.
    """
    consent = Consent.parse(consent_source, consent_text)
    # Read twice, streamed: the first pass refuses a file that cannot be read
    # (before anything is imported) and counts its rows for ``progress``; the
    # second imports a chunk at a time, so memory does not grow with the file.
    columns, total = _check(path)
    report = ImportReport(notes=list(columns.notes))
    first_line: dict[str, int] = {}  # address -> the line it first appeared on
    matched: dict[str, bool] = {}  # address -> whether its tags start a sequence
    starts: dict[tuple[str, ...], bool] = {}  # tags -> whether they start a sequence
    done = 0

    def upsert(rows: Sequence[SubscriberInput]) -> None:
        result = bulk_upsert_subscribers(
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
        report.enrolled += result.enrollments.total()
        report.enrollments.update(result.enrollments)
        for email, tags in result.tags.items():
            key = tuple(tags)
            hit = starts.get(key)
            if hit is None:
                hit = starts[key] = any(
                    triggered_on_subscribe(loaded, key) for loaded in sequences.values()
                )
            matched[email] = hit

    with _reader(path) as (_, records):
        for chunk in _chunks(records, chunk_size):
            valid: list[tuple[int, SubscriberInput]] = []
            for record in chunk:
                line = record.line
                if record.problem is not None:
                    report.errors.append((line, record.problem))
                    continue
                try:
                    data = _row_input(columns, record.cells)
                except InvalidSubscriberError as exc:
                    report.errors.append((line, str(exc)))
                    continue
                earlier = first_line.setdefault(data.email, line)
                if earlier != line:
                    report.duplicates.append((line, earlier))
                valid.append((line, data))
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
                progress(done, total)
    if progress is not None and not total:
        progress(0, 0)
    if report.imported + report.updated + report.enrolled >= STATISTICS_AFTER:
        # PostgreSQL's planner must see the new sizes before the worker's
        # next claim (see refresh_statistics).
        refresh_statistics(session.connection(), [SUBSCRIBER.name, ENROLLMENT.name])
        session.commit()
    report.no_trigger = sum(1 for hit in matched.values() if not hit)
    return report
