"""Fixes for findings 2 and 6 of the web fuzzing report, without HTTP:

* 2: the signature check refuses a timestamp header too long for a float
  instead of raising ``OverflowError``;
* 6: an event ``timestamp`` outside 2000..9000 reads as missing, so the
  receive time is used, as for any other timestamp that is no time.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nurture.core.timing import EARLIEST
from nurture.transports.sendgrid_events import read_event
from nurture.transports.sendgrid_signature import SignatureVerifier

NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
PRIVATE_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    PRIVATE_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode("ascii")


def _signature(timestamp: str, body: bytes) -> str:
    signed = PRIVATE_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signed).decode()


@pytest.mark.parametrize("digits", [308, 309, 400, 512])
def test_a_timestamp_too_long_for_a_float_is_not_verified(digits: int) -> None:
    verifier = SignatureVerifier(PUBLIC_KEY)
    stamp = "9" * digits

    assert not verifier.verify(b"[]", "AAAA", stamp, now=NOW, max_age=300)
    # Signed, too: the age alone refuses it.
    assert not verifier.verify(b"[]", _signature(stamp, b"[]"), stamp, now=NOW, max_age=300)


def test_the_age_check_still_takes_a_fresh_timestamp() -> None:
    verifier = SignatureVerifier(PUBLIC_KEY)
    fresh = str(int((NOW - timedelta(seconds=299)).timestamp()))
    stale = str(int((NOW - timedelta(seconds=301)).timestamp()))

    assert verifier.verify(b"[]", _signature(fresh, b"[]"), fresh, now=NOW, max_age=300)
    assert not verifier.verify(b"[]", _signature(stale, b"[]"), stale, now=NOW, max_age=300)


@pytest.mark.parametrize(
    "stamp",
    [-62135596800, -1, 0, 946684799, 946684799.5, 221845392000, 253402300799, float("inf")],
)
def test_a_timestamp_outside_sensible_times_reads_as_missing(stamp: Any) -> None:
    assert read_event({"event": "open", "timestamp": stamp}).occurred_at is None


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        (946684800, EARLIEST),
        (1764583200, datetime(2025, 12, 1, 10, 0, tzinfo=UTC)),
        (1764583200.5, datetime(2025, 12, 1, 10, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_a_sensible_timestamp_is_kept(stamp: float, expected: datetime) -> None:
    assert read_event({"event": "open", "timestamp": stamp}).occurred_at == expected
