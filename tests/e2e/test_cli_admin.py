"""``nurture admin create-user|list-users|delete-user`` through the real
executable: the password comes from standard input (or is asked twice at a
terminal), is checked, and is stored only as an Argon2 hash that ``list-users``
never shows; the admin created can log in to the app, whose session cookie is
``Secure`` when the base URL is https."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pwdlib import PasswordHash
from sqlalchemy import create_engine, text

from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime
from nurture.app.settings import load_settings
from nurture.testing import MemoryTransport
from nurture.web.app import create_app
from tests.admin_kit import csrf_of
from tests.e2e.test_cli_engine import NURTURE, env, run

PASSWORD = "correct horse battery staple"


def admin(
    *args: str, cwd: Path, db_url: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``nurture admin ARGS`` with ``password`` (a line) on standard input."""
    return subprocess.run(
        [*NURTURE, "admin", *args], cwd=cwd, env=env(db_url), capture_output=True, text=True,
        input=None if password is None else password + "\n", timeout=120,
    )  # fmt: skip


def _hashes(db_url: str) -> dict[str, str]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name, password_hash FROM admin_user ORDER BY id"))
            return {row.name: row.password_hash for row in rows}
    finally:
        engine.dispose()


@pytest.fixture
def work(tmp_path: Path, db_url: str) -> Path:
    assert run("init", "work", cwd=tmp_path, db_url=db_url).returncode == 0
    return tmp_path / "work"


def test_create_list_and_delete_admins(work: Path, db_url: str) -> None:
    created = admin(
        "create-user", "ana", "--email", "ana@example.com", "--zone", "Europe/Stockholm",
        cwd=work, db_url=db_url, password=PASSWORD,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "Created the admin 'ana'" in created.stderr
    assert PASSWORD not in created.stdout + created.stderr
    stored = _hashes(db_url)
    assert list(stored) == ["ana"] and stored["ana"].startswith("$argon2")

    short = admin("create-user", "bo", cwd=work, db_url=db_url, password="too short")
    assert short.returncode == 1
    assert "at least 10 characters" in short.stderr
    assert "Traceback" not in short.stderr

    twice = admin("create-user", "ana", cwd=work, db_url=db_url, password=PASSWORD)
    assert twice.returncode == 1
    assert "already an admin named 'ana'" in twice.stderr

    bad_zone = admin(
        "create-user", "bo", "--zone", "Mars/Olympus", cwd=work, db_url=db_url, password=PASSWORD
    )
    assert bad_zone.returncode == 1
    assert "'Mars/Olympus' is not a time zone" in bad_zone.stderr

    bad_name = admin("create-user", "-", cwd=work, db_url=db_url, password=PASSWORD)
    assert bad_name.returncode != 0
    assert list(_hashes(db_url)) == ["ana"]  # none of the refused ones was stored

    listed = admin("list-users", cwd=work, db_url=db_url)
    assert listed.returncode == 0, listed.stderr
    assert "ana" in listed.stdout and "ana@example.com" in listed.stdout
    assert "Europe/Stockholm" in listed.stdout
    assert stored["ana"] not in listed.stdout and "$argon2" not in listed.stdout
    assert PASSWORD not in listed.stdout

    deleted = admin("delete-user", "ana", cwd=work, db_url=db_url)
    assert deleted.returncode == 0, deleted.stderr
    assert _hashes(db_url) == {}
    assert "No admins" in admin("list-users", cwd=work, db_url=db_url).stdout

    missing = admin("delete-user", "ana", cwd=work, db_url=db_url)
    assert missing.returncode == 1
    assert "no admin named 'ana'" in missing.stderr


class Terminal:
    """What a command wrote to its terminal (the parent side of a pty)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""
        self.mark = 0

    def expect(self, wanted: str, timeout: float = 30) -> None:
        """Wait until ``wanted`` appears after the last thing expected."""
        deadline = time.monotonic() + timeout
        while (found := self.text.find(wanted, self.mark)) < 0:
            left = deadline - time.monotonic()
            assert left > 0, f"no {wanted!r} in {self.text!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 1024)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"the command ended before {wanted!r}: {self.text!r}"
                self.text += chunk.decode("utf-8", "replace")
        self.mark = found + len(wanted)

    def type(self, line: str) -> None:
        os.write(self.fd, f"{line}\n".encode())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_at_a_terminal_the_password_is_asked_twice(work: Path, db_url: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal is the pty
        os.chdir(work)
        os.execve(NURTURE[0], [*NURTURE, "admin", "create-user", "ana"], env(db_url))
    terminal = Terminal(fd)
    # Each prompt ends with the space written once echo is off (and typing
    # ahead flushed): type only after it.
    try:
        terminal.expect("Password: ")
        terminal.type(PASSWORD)
        terminal.expect("Repeat for confirmation: ")
        terminal.type("something else entirely")
        terminal.expect("do not match")
        terminal.expect("Password: ")  # asked again
        terminal.type(PASSWORD)
        terminal.expect("Repeat for confirmation: ")
        terminal.type(PASSWORD)
        terminal.expect("Created the admin 'ana'")
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, terminal.text
    assert PASSWORD not in terminal.text and "something else" not in terminal.text  # no echo
    [(name, stored)] = _hashes(db_url).items()
    assert name == "ana" and PasswordHash.recommended().verify(PASSWORD, stored)


@pytest.mark.parametrize("base_url", ["http://localhost:8000", "https://mail.example.com"])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_admin_created_logs_in(work: Path, db_url: str, base_url: str) -> None:
    created = admin("create-user", "ana", cwd=work, db_url=db_url, password=PASSWORD)
    assert created.returncode == 0, created.stderr
    settings = load_settings(work, database_url=db_url, base_url=base_url)
    clock = FixedClock(datetime.now(UTC))
    runtime = build_runtime(settings, clock, transport=MemoryTransport())
    try:
        client = TestClient(create_app(runtime), base_url=base_url)
        form = {"csrf": csrf_of(client.get("/admin/login").text), "name": "ana"}
        wrong = client.post("/admin/login", data={**form, "password": "not it at all"})
        assert wrong.status_code == 401
        answer = client.post(
            "/admin/login", data={**form, "password": PASSWORD}, follow_redirects=False
        )
        assert answer.status_code == 303, answer.text
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("nurture_admin=") and "HttpOnly" in cookie
        assert ("; Secure" in cookie) is base_url.startswith("https://")
        assert client.get("/admin/account").text.count("ana") >= 1
    finally:
        runtime.engine.dispose()
