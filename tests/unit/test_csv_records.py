"""A CSV record is bounded as a whole, not only line by line and cell by cell.

A quoted cell may hold line breaks, so one record can run over any number of
short lines, each within the line limit and each cell within the cell limit
(a quote left open runs to the end of the file). Past ``RECORD_LIMIT`` (a
line's limit: a record on one line may be that long) the record is that row's
error, reported at its first line as other row errors are; the rest of it is
read a line at a time and dropped, and the import goes on with the next record.
"""

from __future__ import annotations

import csv
import io
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import nurture.audience.csv_import as csv_import
import nurture.audience.csv_records as csv_records
from nurture.audience.csv_records import CELL_LIMIT, LINE_LIMIT, ImportFileError
from nurture.cli.main import app

LIMIT = 2_000
"""The record limit in these tests (the real one is 17 MiB)."""
TOO_LONG = f"the row is longer than {LIMIT:,} characters, over"


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_records, "RECORD_LIMIT", LIMIT)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "people.csv"
    path.write_text(text, encoding="utf-8", newline="")
    return path


def many_cells(lines: int) -> str:
    """The rest of a record that opened a quoted cell: ``lines`` short lines,
    each closing that cell and opening another, then the last cell's end."""
    return 'bbbbbbb","c\n' * lines + 'd"\n'


def read(path: Path) -> list[tuple[int, list[str], str | None]]:
    with csv_import._reader(path) as (_, records):
        return [(record.line, record.cells, record.problem) for record in records]


def test_the_record_limit_is_a_lines_limit() -> None:
    # A record on one line may be as long as a line; one over several lines as well.
    assert csv_records.RECORD_LIMIT == LINE_LIMIT > CELL_LIMIT


@pytest.mark.usefixtures("small_limit")
def test_a_record_over_many_short_lines_is_that_rows_error_at_its_first_line(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "email,note\n"
        "anna@example.com,Anna\n"
        f'bo@example.com,"a\n{many_cells(1000)}'  # lines 3 to 1004
        "\n"  # line 1005, blank
        'cia@example.com,"Cia AB\nMalmö"\n'  # lines 1006 and 1007
        "dan@example.com,Dan\n",
    )
    records = read(path)
    assert [line for line, _, _ in records] == [2, 3, 1006, 1008]
    assert records[1] == (3, [], f"{TOO_LONG} 1,002 lines (is a quote left open?)")
    # The records after it are read as if it had not been there.
    assert records[2][1:] == (["cia@example.com", "Cia AB\nMalmö"], None)
    assert records[3][1:] == (["dan@example.com", "Dan"], None)
    assert csv_import._check(path)[1] == 4


@pytest.mark.usefixtures("small_limit")
def test_a_record_at_the_limit_is_read_and_one_past_it_is_not(tmp_path: Path) -> None:
    head = 'bo@example.com,"'
    body = "x" * 9 + "\n"
    fill = LIMIT - len(head) - len('"\n')
    at = head + body * (fill // len(body)) + "y" * (fill % len(body)) + '"\n'
    assert len(at) == LIMIT
    assert read(write(tmp_path, f"email,note\n{at}"))[0][2] is None
    past = at[:-2] + 'z"\n'
    assert len(past) == LIMIT + 1
    assert read(write(tmp_path, f"email,note\n{past}"))[0][2] is not None


@pytest.mark.usefixtures("small_limit")
def test_a_quote_left_open_runs_to_the_end_of_the_file(tmp_path: Path) -> None:
    rows = "".join(f"p{n}@example.com,Person {n}\n" for n in range(500))
    path = write(tmp_path, f'email,note\nanna@example.com,"Anna\n{rows}')
    assert read(path) == [
        (2, [], f"{TOO_LONG} 501 lines (is a quote left open?)"),
    ]


@pytest.mark.usefixtures("small_limit")
def test_a_header_too_long_refuses_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'email,"note\n' + "x\n" * LIMIT + '"\nanna@example.com,A\n')
    with pytest.raises(ImportFileError, match=re.escape(f"{path}:1: the header is longer than")):
        read(path)


def test_memory_stays_bounded_whatever_the_records_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_records, "RECORD_LIMIT", 50_000)
    # 200,000 lines, 400,000 cells in one record: some 25 MB as a list of cells.
    path = write(tmp_path, f'email,note\nbo@example.com,"a\n{many_cells(200_000)}')
    tracemalloc.start()
    try:
        _, count = csv_import._check(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 1
    assert peak < 5_000_000, f"{peak:,} bytes at the peak"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
@given(rest=st.text(st.sampled_from(list('ab",;\t \r\n')), max_size=60))
def test_where_a_record_ends_is_where_the_csv_module_ends_it(delimiter: str, rest: str) -> None:
    """Reading past a record too long, line by line, ends where csv.reader would."""
    lines = io.StringIO(f'x{delimiter}"q\n{rest}', newline="").readlines()
    reader = csv.reader(iter(lines), delimiter=delimiter)
    next(reader)
    expected = reader.line_num
    read_here = 1
    for line in lines[1:]:
        read_here += 1
        if not csv_records.ends_quoted(line, delimiter):
            break
    assert read_here == expected


def test_the_import_reports_the_row_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_limit: None
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(app, ["init", "shop"])
    assert made.exit_code == 0, made.output
    monkeypatch.chdir(tmp_path / "shop")
    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    write(
        tmp_path / "shop",
        "email,name\n"
        "anna@example.com,Anna\n"
        f'bo@example.com,"a\n{many_cells(500)}'
        "cia@example.com,Cia\n",
    )
    result: Any = runner.invoke(
        app, ["subscribers", "import", "people.csv"], env={"COLUMNS": "500"}
    )
    assert result.exit_code == 1, result.output  # a row was bad, as for any bad row
    assert "2 imported, 0 updated, 0 unchanged, 1 with errors" in result.output
    assert f"people.csv:3: {TOO_LONG} 502 lines (is a quote left open?)" in result.output
    listed = runner.invoke(app, ["subscribers", "list"], env={"COLUMNS": "500"})
    assert "anna@example.com" in listed.output and "cia@example.com" in listed.output
    assert "bo@example.com" not in listed.output
