"""A zone that is no place is refused the same way by every command that takes one.

``localtime`` and ``Factory`` are files of the zoneinfo folder that
``ZoneInfo()`` opens: sequence files and ``simulate --tz`` used to accept them
while ``subscribers add`` refused them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NURTURE = [sys.executable, "-m", "nurture"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(COLUMNS="200", NURTURE_DATABASE_URL=f"sqlite:///{cwd / 'nurture.db'}")
    return subprocess.run(
        [*NURTURE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("places")
    assert run("init", "work", cwd=base).returncode == 0
    return base / "work"


@pytest.mark.parametrize("zone", ["localtime", "Factory"])
def test_every_command_refuses_a_zone_that_is_no_place(work: Path, zone: str) -> None:
    expected = f"unknown time zone {zone!r} (use an IANA name such as Europe/Stockholm)"

    added = run("subscribers", "add", "anna@example.com", "--tz", zone, cwd=work)
    assert added.returncode == 1
    assert f"error: {expected}" in added.stderr

    simulated = run("simulate", "sales-process", "--tz", zone, cwd=work)
    assert simulated.returncode == 1
    assert f"--tz: {expected}" in simulated.stderr

    path = work / "sequences" / "sales-process.yaml"
    original = path.read_text(encoding="utf-8")
    assert "timezone: Europe/Stockholm" in original
    try:
        path.write_text(
            original.replace("timezone: Europe/Stockholm", f"timezone: {zone}"), encoding="utf-8"
        )
        validated = run("validate", cwd=work)
    finally:
        path.write_text(original, encoding="utf-8")
    assert validated.returncode == 1
    assert f"timezone: {expected}" in validated.stdout + validated.stderr
