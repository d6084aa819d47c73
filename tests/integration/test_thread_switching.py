"""The commands that run the dispatcher hand the interpreter lock over after
1 ms (``nurture.app.runtime.prompt_thread_switching``): with CPython's 5 ms a
send pool's threads waited that long for it after each database round and
each provider answer, while the dispatching thread planned."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nurture.app.runtime import SWITCH_INTERVAL
from nurture.cli.main import app
from tests.e2e.folders import init_live

DEFAULT = 0.005  # CPython's


@pytest.fixture
def default_switching() -> Iterator[None]:
    """The interval as a new process has it, and back as it was afterwards."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(DEFAULT)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = init_live(tmp_path / "shop")
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.usefixtures("default_switching")
def test_dispatch_hands_the_interpreter_lock_over_after_one_millisecond(project: Path) -> None:
    added = CliRunner().invoke(
        app, ["--now", "2026-11-27T14:30:00Z", "subscribers", "add", "k@example.com"]
    )
    assert added.exit_code == 0, added.output
    assert sys.getswitchinterval() == pytest.approx(DEFAULT)
    result = CliRunner().invoke(app, ["--now", "2026-11-27T14:30:00Z", "dispatch"])
    assert result.exit_code == 0, result.output
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    assert SWITCH_INTERVAL < DEFAULT
