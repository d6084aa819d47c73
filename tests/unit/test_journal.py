"""The serial sender's send journal: what a worker writes, the fence a
reconciler puts on it, and what recovery decides from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nurture.store import journal
from nurture.store.db import make_engine

ME = "dispatcher-aaaa"
OTHER = "dispatcher-bbbb"


def answer(key: str, status: str = "sent") -> dict[str, object]:
    return {"_key": key, "_status": status, "_attempts": 1, "_pid": f"msg-{key}"}


def test_the_journal_lives_beside_a_sqlite_file_only(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    assert journal.directory_for(make_engine(f"sqlite:///{path}")) == Path(f"{path}.send-journal")
    assert journal.directory_for(make_engine("sqlite://")) is None
    assert journal.directory_for(make_engine("sqlite:///:memory:")) is None


def test_a_batch_reads_back_as_written(tmp_path: Path) -> None:
    book = journal.SendJournal(tmp_path, ME)
    book.reserving(["k1", "k2", "k3"])
    book.record(None, "k1")
    book.record(answer("k1"), "k2")
    book.close(remove=False)
    found = journal.recover(tmp_path, {"k1": ME, "k2": ME, "k3": ME})
    assert found.answers == {"k1": answer("k1")}
    assert found.again == {"k3"}  # never started; k2 started without an answer: unknown
    assert found.fenced == [book.path]


def test_a_fenced_worker_may_not_start_another_call(tmp_path: Path) -> None:
    book = journal.SendJournal(tmp_path, ME)
    book.reserving(["k1", "k2"])
    book.record(None, "k1")
    assert not book.overtaken()
    found = journal.recover(tmp_path, {"k1": ME, "k2": ME})  # the lease ran out
    assert found.again == {"k2"}
    assert book.overtaken()
    with pytest.raises(journal.Fenced):
        book.record(answer("k1"), "k2")
    book.close(remove=True)
    assert book.path.exists()  # left to the reconciler that fenced it


def test_lines_after_the_fence_are_not_trusted(tmp_path: Path) -> None:
    book = journal.SendJournal(tmp_path, ME)
    book.reserving(["k1", "k2"])
    # A reconciler fences between the worker's check and its next write:
    # the worker's line lands after the fence, and its write reports it.
    with open(book.path, "ab") as raw:
        raw.write(b"F\n")
    with pytest.raises(journal.Fenced):
        book.record(None, "k1")
    found = journal.recover(tmp_path, {"k1": ME, "k2": ME})
    assert found.again == {"k1", "k2"}  # the start of k1 came after the fence


def test_an_unfinished_last_line_is_ignored(tmp_path: Path) -> None:
    book = journal.SendJournal(tmp_path, ME)
    book.reserving(["k1", "k2"])
    book.record(None, "k1")
    book.close(remove=False)
    with open(book.path, "ab") as raw:
        raw.write(b'A {"_key": "k1", "_sta')  # killed in the middle of a line
    found = journal.recover(tmp_path, {"k1": ME, "k2": ME})
    assert found.answers == {}
    assert found.again == {"k2"}


def test_only_the_journals_of_the_expired_worker_are_read_and_fenced(tmp_path: Path) -> None:
    dead = journal.SendJournal(tmp_path, ME)
    dead.reserving(["d1"])
    alive = journal.SendJournal(tmp_path, OTHER)
    alive.reserving(["a1", "d1"])  # it tried d1 too, and did not get it
    alive.record(None, "a1")
    found = journal.recover(tmp_path, {"d1": ME})
    assert found.again == {"d1"}
    assert found.fenced == [dead.path]
    assert not alive.overtaken()
    alive.record(answer("a1"), None)


def test_the_latest_journal_that_started_a_call_decides(tmp_path: Path) -> None:
    first = journal.SendJournal(tmp_path, ME)
    first.reserving(["k1"])
    first.record(None, "k1")
    first.record(answer("k1", "retry"), None)
    first.close(remove=False)  # its confirm failed: the journal was kept
    second = journal.SendJournal(tmp_path, ME)
    second.reserving(["k1"])
    second.record(None, "k1")  # the retry, with no answer yet
    found = journal.recover(tmp_path, {"k1": ME})
    assert found.answers == {}  # not the old retry answer: the new call may have gone out
    assert found.again == set()


def test_a_key_no_journal_names_is_left_for_unknown(tmp_path: Path) -> None:
    book = journal.SendJournal(tmp_path, ME)
    book.reserving(["k1"])
    found = journal.recover(tmp_path, {"other": ME, "k1": OTHER})
    assert (found.answers, found.again, found.fenced) == ({}, set(), [])


def test_an_idle_journal_is_offered_for_removal(tmp_path: Path) -> None:
    book = journal.SendJournal(tmp_path, ME)
    book.reserving(["k1"])
    book.close(remove=False)
    assert journal.recover(tmp_path, {}).idle == []
    old = os.stat(book.path).st_mtime - journal.STALE_AFTER - 60
    os.utime(book.path, (old, old))
    assert journal.recover(tmp_path, {}).idle == [(book.path, {"k1"})]


def test_a_finished_batch_removes_its_journal(tmp_path: Path) -> None:
    book = journal.SendJournal(tmp_path, ME)
    book.reserving(["k1"])
    book.record(None, "k1")
    book.close(remove=True)
    assert list(tmp_path.iterdir()) == []
