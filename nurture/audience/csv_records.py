"""Reading a CSV file for import, streamed and bounded: its lines, its records.

What :mod:`nurture.audience.csv_import` reads, apart from what it does with
it. The file is read a line at a time and never held whole: each line within
:data:`LINE_LIMIT`, each cell within :data:`CELL_LIMIT`, each record (a quoted
cell may run over several lines) within :data:`RECORD_LIMIT`. What makes the
whole file unreadable (not UTF-8, no header, an endless line) is an
:class:`ImportFileError` naming its line; a record too long is that row's
error (:attr:`Record.problem`), and the reading goes on after it.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import NamedTuple

from nurture.errors import NurtureError

__all__ = [
    "CELL_LIMIT",
    "LINE_LIMIT",
    "RECORD_LIMIT",
    "ImportFileError",
    "Record",
    "ends_quoted",
    "read_csv",
]

CELL_LIMIT = 16 * 1024 * 1024
"""The longest cell the reader takes (the csv module's default is 128 KiB). A
longer cell than a field allows is that row's error, reported with the rest,
so one megabyte-long name does not refuse the whole file; a cell beyond this
limit still refuses it (naming its line)."""
csv.field_size_limit(max(csv.field_size_limit(), CELL_LIMIT))

LINE_LIMIT = CELL_LIMIT + 1024 * 1024
"""The longest line the reader takes (characters): a cell at :data:`CELL_LIMIT`
and the rest of its row. Lines are read at most this long, so a file with no
line break (a binary file, ``/dev/zero``) is refused with its line number once
this much is read, not after the whole of it is held in memory."""

RECORD_LIMIT = LINE_LIMIT
"""The longest record the reader takes (characters, all its lines together):
as long as a line may be, since a record on one line may be that long. A
quoted cell may hold line breaks, so a record can run over any number of short
lines (a quote left open runs to the end of the file), each within
:data:`LINE_LIMIT` and each cell within :data:`CELL_LIMIT`. A longer record is
that row's error, reported at its first line; the rest of it is read a line at
a time and dropped, and the import goes on with the next record."""


class ImportFileError(NurtureError):
    """A whole CSV file cannot be imported (unreadable, not UTF-8, bad header)."""


def _bad_utf8_line(path: Path) -> int:
    """The first line of ``path`` that is not UTF-8 (read in pieces, whatever
    its lines' length: a line break is one byte, never inside a UTF-8 sequence)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    number = 1
    with path.open("rb") as handle:
        while piece := handle.read(_PIECE):
            held = len(decoder.getstate()[0])  # the start of a character cut in two
            try:
                decoder.decode(piece)
            except UnicodeDecodeError as exc:
                return number + piece.count(b"\n", 0, max(exc.start - held, 0))
            number += piece.count(b"\n")
    return number


_PIECE = 1024 * 1024


@contextmanager
def _lines(path: Path) -> Iterator[Iterator[str]]:
    """The file's text, streamed (utf-8-sig drops the byte-order mark Excel writes).

    A read or decoding error is an :class:`ImportFileError` naming the line.
    """
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc

    def lines() -> Iterator[str]:
        number = 0
        try:
            while text := handle.readline(LINE_LIMIT + 1):
                number += 1
                if len(text) > LINE_LIMIT:
                    raise ImportFileError(
                        f"{path}:{number}: the line is longer than {LINE_LIMIT:,} characters "
                        "(is this a CSV file?)"
                    )
                yield text
        except UnicodeDecodeError as exc:
            line = _bad_utf8_line(path)
            raise ImportFileError(
                f"{path}:{line}: not UTF-8 (save the file as 'CSV UTF-8')"
            ) from exc
        except OSError as exc:
            raise ImportFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc

    with handle:
        yield lines()


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class Record(NamedTuple):
    """One non-blank record: its first line, and its cells or why it has none."""

    line: int
    cells: list[str]
    problem: str | None = None  # the row's error: a record too long to read


class RecordTooLong(Exception):
    """The record being read passed :data:`RECORD_LIMIT` (raised through the csv reader)."""


def ends_quoted(text: str, delimiter: str) -> bool:
    """Whether a record that enters the line ``text`` inside a quoted cell is
    still inside one at its end (and so goes on to the next line), read as the
    csv module reads it: ``""`` is a quote in the cell; a closing quote leaves
    the cell unquoted up to the next delimiter; a cell is quoted only when a
    quote is its first character; a line break outside quotes ends the record."""
    position = 0
    while True:
        close = text.find('"', position)
        while close >= 0 and text.startswith('"', close + 1):  # "" is a quote in the cell
            close = text.find('"', close + 2)
        if close < 0:
            return True
        position = close + 1
        while True:  # unquoted, up to the next cell
            cut = text.find(delimiter, position)
            if cut < 0:
                return False
            position = cut + 1
            if text.startswith('"', position):
                position += 1
                break


class Feed:
    """The lines the csv reader reads, counted: the number of the last line
    handed out, and the characters of the record being read. Past
    :data:`RECORD_LIMIT` the rest of the record is read here, a line at a time,
    and dropped; the reader is stopped with :class:`RecordTooLong` and starts
    afresh at the next record on its next call."""

    def __init__(self, lines: Iterator[str], delimiter: str) -> None:
        self._lines = lines
        self._delimiter = delimiter
        self.line = 0
        self._record = 0

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> str:
        text = next(self._lines)
        self.line += 1
        continues = self._record > 0
        self._record += len(text)
        if continues and self._record > RECORD_LIMIT:
            # The csv reader asks for a line that continues a record only inside
            # a quoted cell (a first line is bounded by LINE_LIMIT): read on to
            # the line where that record ends.
            while ends_quoted(text, self._delimiter):
                text = next(self._lines, "")
                if not text:
                    break
                self.line += 1
            raise RecordTooLong
        return text

    def new_record(self) -> None:
        self._record = 0


@contextmanager
def read_csv(path: Path) -> Iterator[tuple[list[str], Iterator[Record]]]:
    """The file's header cells and its non-blank records with their first line, streamed."""
    with _lines(path) as lines:
        first = next(lines, "")
        delimiter = _delimiter(first)
        feed = Feed(chain((first,), lines) if first else lines, delimiter)
        reader = csv.reader(feed, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                raise ImportFileError(
                    f"{path}:1: the file is empty (expected a header with 'email')"
                )
        except csv.Error as exc:
            raise ImportFileError(f"{path}:{feed.line}: {exc}") from exc
        except RecordTooLong as exc:
            raise ImportFileError(
                f"{path}:1: the header is longer than {RECORD_LIMIT:,} characters "
                "(is a quote left open?)"
            ) from exc

        def records() -> Iterator[Record]:
            while True:
                # A quoted cell may span lines: report the record's first line.
                feed.new_record()
                line = feed.line + 1
                try:
                    cells = next(reader, None)
                except RecordTooLong:
                    spread = feed.line - line + 1
                    yield Record(
                        line,
                        [],
                        f"the row is longer than {RECORD_LIMIT:,} characters, over "
                        f"{spread:,} lines (is a quote left open?)",
                    )
                    continue
                except csv.Error as exc:
                    raise ImportFileError(f"{path}:{feed.line}: {exc}") from exc
                if cells is None:
                    return
                if "".join(cells).strip():
                    yield Record(line, cells)

        yield header, records()
