"""A symlink loop among the sequence files is one file's problem, not a crash.

``Path.resolve`` raises RuntimeError for a loop (Python 3.11, 3.12), which
used to end ``validate``, ``simulate`` and ``preview`` in a traceback even
when the loop had nothing to do with the sequence asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nurture.core.files import FileRefused
from nurture.core.loader import (
    SYMLINK_LOOP,
    broken_file,
    display_path,
    load_sequence_file,
    load_sequences,
    read_file,
    symlink_loop,
)
from tests.unit.test_file_format import GOOD


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sequences/ with one good file and loop1.yaml -> loop2.yaml -> loop1.yaml."""
    monkeypatch.chdir(tmp_path)
    sequences = tmp_path / "sequences"
    sequences.mkdir()
    (sequences / "demo.yaml").write_text(GOOD, encoding="utf-8")
    os.symlink("loop2.yaml", sequences / "loop1.yaml")
    os.symlink("loop1.yaml", sequences / "loop2.yaml")
    return sequences


def test_the_loop_is_reported_and_the_other_sequences_load(folder: Path) -> None:
    loaded, diagnostics = load_sequences([folder])
    assert list(loaded) == ["demo"]
    assert [str(d) for d in diagnostics] == [
        f"sequences/loop1.yaml:1:1: {SYMLINK_LOOP}",
        f"sequences/loop2.yaml:1:1: {SYMLINK_LOOP}",
    ]
    assert [(b.display, b.sequence_id) for b in loaded.broken] == [
        ("sequences/loop1.yaml", "loop1"),
        ("sequences/loop2.yaml", "loop2"),
    ]
    assert "symlink loop" in SYMLINK_LOOP


def test_a_loop_named_explicitly_says_it_is_a_loop(folder: Path) -> None:
    loaded, diagnostics = load_sequence_file(folder / "loop1.yaml")
    assert loaded is None
    assert [str(d) for d in diagnostics] == [f"sequences/loop1.yaml:1:1: {SYMLINK_LOOP}"]
    assert broken_file(folder / "loop2.yaml").display == "sequences/loop2.yaml"


def test_symlink_loop_tells_a_loop_from_a_missing_or_real_file(folder: Path) -> None:
    os.symlink("nowhere.yaml", folder / "dangling.yaml")
    assert symlink_loop(folder / "loop1.yaml")
    assert not symlink_loop(folder / "demo.yaml")
    assert not symlink_loop(folder / "dangling.yaml")
    assert not symlink_loop(folder / "missing.yaml")
    assert display_path(folder / "loop2.yaml") == "sequences/loop2.yaml"


def test_read_file_refuses_a_loop(folder: Path) -> None:
    with pytest.raises(FileRefused) as refused:
        read_file(folder / "loop1.yaml", limit=1000, inside=folder)
    assert refused.value.reason == SYMLINK_LOOP
    assert read_file(folder / "demo.yaml", limit=10_000) == GOOD
