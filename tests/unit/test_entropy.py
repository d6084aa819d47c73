"""The random part of ledger keys: read from the OS a page at a time, each
byte handed out once, in every thread and in a forked child."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from nurture.sending import entropy
from nurture.sending.dispatcher import time_ordered_key


def counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every read of the OS's random source from now on, by its size (the
    real source still answers)."""
    reads: list[int] = []
    real: Callable[[int], bytes] = os.urandom

    def urandom(size: int) -> bytes:
        reads.append(size)
        return real(size)

    monkeypatch.setattr(os, "urandom", urandom)
    return reads


def test_keys_read_the_os_random_source_once_per_page(monkeypatch: pytest.MonkeyPatch) -> None:
    # A read per key let go of the interpreter lock at every email planned,
    # and the send pool's threads then never got it back (see the module).
    reads = counting_reads(monkeypatch)
    keys = [time_ordered_key() for _ in range(4000)]  # 40,000 random bytes
    assert len(set(keys)) == len(keys)
    assert 1 <= len(reads) <= 40_000 // entropy.PAGE + 1
    assert all(size == entropy.PAGE for size in reads)


def test_a_request_bigger_than_a_page_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = counting_reads(monkeypatch)
    value = entropy.random_hex(entropy.PAGE + 10)
    assert len(value) == 2 * (entropy.PAGE + 10)
    assert reads == [entropy.PAGE + 10]


def test_threads_drawing_together_never_get_the_same_bytes() -> None:
    drawn: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(drawn))

    def draw(into: list[str]) -> None:
        start.wait()
        into.extend(entropy.random_hex(10) for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = [value for into in drawn for value in into]
    assert len(values) == 16_000
    assert len(set(values)) == len(values)


def test_a_forked_child_does_not_hand_out_its_parents_next_bytes() -> None:
    entropy.random_hex(10)  # the parent holds a page with bytes left
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next value, then out without pytest's teardown
        try:
            os.write(writing, entropy.random_hex(16).encode())
        finally:
            os._exit(0)
    os.close(writing)
    try:
        child = os.read(reading, 64).decode()
    finally:
        os.close(reading)
        os.waitpid(pid, 0)
    parent = entropy.random_hex(16)
    assert len(child) == 32
    assert child != parent
