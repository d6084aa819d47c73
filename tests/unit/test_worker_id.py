"""A worker's id says which machine and process it is, and is new at every start."""

from __future__ import annotations

import os
import socket

import pytest

from nurture.sending.dispatcher import new_worker_id
from nurture.store.tables import EnrollmentRow, WorkerTickRow


def test_a_worker_id_names_the_host_and_the_process() -> None:
    host, pid, nonce = new_worker_id().split(":")
    assert host == socket.gethostname().split(".")[0][:40]
    assert pid == str(os.getpid())
    assert len(nonce) == 6 and int(nonce, 16) >= 0


def test_a_restart_with_the_same_host_and_pid_gets_a_new_id() -> None:
    # A container restarted keeps its hostname and is pid 1 again: the claims
    # of the process that died must not look like the new one's.
    assert len({new_worker_id() for _ in range(50)}) == 50


def test_a_long_host_name_still_fits_the_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "a" * 63 + ".very.long.example.com")
    made = new_worker_id()
    assert made.startswith("a" * 40 + ":")
    # Stored as a heartbeat's key and as a claim's owner.
    ticks, enrollments = WorkerTickRow.__table__, EnrollmentRow.__table__  # type: ignore[attr-defined]
    for column in (ticks.c.worker_id, enrollments.c.claimed_by):
        assert len(made) <= column.type.length, column
