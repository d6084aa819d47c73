"""`make demo` (the README's first command) runs the real dispatcher end to end."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from pathlib import Path


def test_demo_sends_the_whole_series(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    # Ten simulated days per second: the same code path, a shorter wait.
    result = subprocess.run(
        [sys.executable, "-m", "nurture.demo", "--dir", str(folder), "--speed", "864000"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    emails = sorted((folder / "outbox").glob("*.eml"))
    # 6 subscribers with the b2b tag x 5 steps, less Ola's skipped case study
    # and the 2 emails Tom never gets because he bought (Sam has no b2b tag).
    assert len(emails) == 27, result.stdout
    assert "27 emails" in result.stdout
    recipients = set()
    for path in emails:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        recipients.add(message["To"].addresses[0].addr_spec)
    assert "sam@example.com" not in recipients
    assert len(recipients) == 6
    # Running it again replaces the demo folder instead of piling up.
    again = subprocess.run(
        [sys.executable, "-m", "nurture.demo", "--dir", str(folder), "--speed", "864000"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0
    assert len(list((folder / "outbox").glob("*.eml"))) == 27
