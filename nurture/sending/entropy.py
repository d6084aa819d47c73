"""Random bytes for the dispatcher's hot path, read from the OS a page at a time.

Every planned email gets a ledger key with 80 random bits
(:func:`~nurture.sending.dispatcher.time_ordered_key`). Read with
:func:`os.urandom` one key at a time, each read let go of the interpreter
lock around its system call and took it straight back. CPython hands the
lock to a waiting thread only once the holder has kept it for a whole
switch interval (5 ms) without letting go, so a thread that lets go this
often is never asked to: while the dispatching thread planned a batch (one
read every 160 µs or so), the send pool's threads, their database answers
long arrived, waited for the whole batch (160 ms for 1,000 emails, measured).
Reading a page of 4,096 bytes at a time lets go of the lock once per 400
keys instead, and the pool goes on sending while a batch is planned.

The bytes are the operating system's, as :mod:`secrets` would give; they are
kept in this process only until used, each handed out once. A forked child
starts with an empty page of its own (:func:`os.register_at_fork`): parent
and child never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

__all__ = ["random_hex"]

PAGE = 4096
"""Bytes read from the operating system at a time."""

_lock = threading.Lock()
_page = b""
_used = 0


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes from the OS's secure source, as hex digits."""
    global _page, _used
    with _lock:  # uncontended, acquired without letting go of the interpreter lock
        if _used + nbytes > len(_page):
            _page, _used = os.urandom(max(PAGE, nbytes)), 0
        chunk = _page[_used : _used + nbytes]
        _used += nbytes
    return chunk.hex()


def _forget() -> None:
    """In a forked child: nothing of the parent's page is handed out again."""
    global _page, _used, _lock
    _page, _used, _lock = b"", 0, threading.Lock()


os.register_at_fork(after_in_child=_forget)
