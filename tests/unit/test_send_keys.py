"""The ledger keys the dispatcher makes: unique, unguessable, and in time order."""

from __future__ import annotations

import re
import time

from nurture.sending.dispatcher import time_ordered_key


def test_keys_are_32_hex_digits_and_unique() -> None:
    keys = [time_ordered_key() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", key) for key in keys)
    assert len(set(keys)) == len(keys)


def test_a_key_made_later_sorts_after_an_earlier_one() -> None:
    earlier = [time_ordered_key() for _ in range(50)]
    time.sleep(0.003)  # the time part counts milliseconds
    later = [time_ordered_key() for _ in range(50)]
    assert max(earlier) < min(later)


def test_keys_of_one_millisecond_differ_in_their_random_part() -> None:
    # 80 random bits after the time: keys made together share at most the
    # time part, so one key does not tell the next.
    first, second = time_ordered_key(), time_ordered_key()
    assert first[12:] != second[12:]
    assert int(first[:12], 16) <= int(second[:12], 16)
