"""Values in pieces, so one statement (an ``IN`` list, an ``executemany``)
stays well below the drivers' limits whatever a caller passes: a webhook post
carries thousands of addresses, an import hundreds of thousands of rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")

CHUNK = 500
"""Values per statement unless a caller says otherwise."""


def chunked(values: Iterable[T], size: int = CHUNK) -> Iterator[tuple[T, ...]]:
    """``values`` in tuples of ``size`` (the last one shorter), read lazily
    (``itertools.batched`` is Python 3.12+)."""
    iterator = iter(values)
    while chunk := tuple(islice(iterator, size)):
        yield chunk
