"""Signed link tokens: only a genuine token for the right purpose opens, and
rotating the secret key does not break the links already sent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import pytest

from nurture.app.settings import Settings, load_settings
from nurture.core.tokens import CONFIRM, MANAGE, sign, verify
from nurture.errors import ConfigurationError
from nurture.sending.composer import build_links, read_link_token

SECRET = "a-long-random-secret"
OLD = "the-previous-random-secret"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def test_a_genuine_token_gives_back_its_payload() -> None:
    token = sign(SECRET, MANAGE, {"s": 42, "e": "karin@example.com"}, now=NOW)
    assert verify(SECRET, MANAGE, token, now=NOW) == {"s": 42, "e": "karin@example.com"}


def _flip_signature(token: str) -> str:
    # A character in the middle: the last one may carry unused base64 bits.
    at = token.rindex(".") + 10
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


def _swap_payload(token: str) -> str:
    # The same signature over another payload: {} instead of the real one.
    return "e30" + token[token.index(".") :]


@pytest.mark.parametrize(
    "mangle",
    [
        _flip_signature,
        _swap_payload,
        lambda t: t.rsplit(".", 1)[0],  # no signature
        lambda t: t.split(".")[0],  # payload only
        lambda t: t + "é",  # not ASCII: refused, not an exception
        lambda t: "é" + t,
        lambda t: t + "!",  # outside base64: the decoder would skip it
        lambda t: "",
        lambda t: "...",
    ],
    ids=[
        "signature",
        "payload",
        "no-signature",
        "payload-only",
        "non-ascii",
        "non-ascii-2",
        "not-base64",
        "empty",
        "dots",
    ],
)
def test_a_tampered_token_is_refused(mangle: Callable[[str], str]) -> None:
    token = sign(SECRET, MANAGE, {"s": 42}, now=NOW)
    assert verify(SECRET, MANAGE, mangle(token), now=NOW) is None


def test_a_forged_token_is_refused() -> None:
    # Well formed, but signed by someone who does not know the secret.
    forged = sign("guessed-secret", MANAGE, {"e": "karin@example.com", "s": "demo"}, now=NOW)
    assert verify(SECRET, MANAGE, forged, now=NOW) is None
    assert verify([SECRET, OLD], MANAGE, forged, now=NOW) is None


def test_a_token_is_bound_to_its_purpose() -> None:
    token = sign(SECRET, MANAGE, {"s": 42}, now=NOW)
    assert verify(SECRET, CONFIRM, token, now=NOW) is None
    assert verify(SECRET, CONFIRM, sign(SECRET, CONFIRM, {"s": 42}, now=NOW), now=NOW) == {"s": 42}


def test_the_first_key_signs_and_every_key_verifies() -> None:
    token = sign([SECRET, OLD], MANAGE, {"s": 1}, now=NOW)
    assert verify(SECRET, MANAGE, token, now=NOW) == {"s": 1}  # signed with the first
    assert verify(OLD, MANAGE, token, now=NOW) is None
    old_token = sign(OLD, MANAGE, {"s": 2}, now=NOW)
    assert verify([SECRET, OLD], MANAGE, old_token, now=NOW) == {"s": 2}
    assert verify([SECRET], MANAGE, old_token, now=NOW) is None


def test_without_a_key_nothing_is_signed_or_verified() -> None:
    with pytest.raises(ValueError, match="secret key"):
        sign([], MANAGE, {"s": 1}, now=NOW)
    with pytest.raises(ValueError, match="secret key"):
        verify([], MANAGE, "x.y.z", now=NOW)


def test_max_age_expires_a_token_on_the_given_clock() -> None:
    token = sign(SECRET, CONFIRM, {"s": 1}, now=NOW)
    day = timedelta(days=1)
    assert verify(SECRET, CONFIRM, token, now=NOW + day, max_age=day) == {"s": 1}
    assert verify(SECRET, CONFIRM, token, now=NOW + day + timedelta(seconds=1), max_age=day) is None
    # Signed "in the future" (a clock gone wrong) does not open either.
    assert verify(SECRET, CONFIRM, token, now=NOW - timedelta(seconds=5), max_age=day) is None
    # Without max_age the age does not matter (unsubscribe links never expire).
    assert verify(SECRET, CONFIRM, token, now=NOW + 1000 * day) == {"s": 1}


def _token_of(url: str) -> str:
    return unquote(url.rsplit("/", 1)[1])


def test_links_signed_with_the_old_key_still_open_after_rotation() -> None:
    before = Settings(secret_key=OLD)
    links = build_links(before.base_url, before.secret_key, "karin@example.com", "demo", now=NOW)
    later = NOW + timedelta(days=90)

    rotated = Settings(secret_key=SECRET, old_secret_keys=[OLD])
    for url in (links.unsubscribe_url, links.preferences_url):
        assert read_link_token(rotated.secret_keys, _token_of(url), now=later) == (
            "karin@example.com",
            "demo",
        )

    forgotten = Settings(secret_key=SECRET)  # the old key no longer listed
    assert (
        read_link_token(forgotten.secret_keys, _token_of(links.unsubscribe_url), now=later) is None
    )

    # New links are signed with the new key only.
    fresh = build_links(
        rotated.base_url, rotated.secret_key, "karin@example.com", "demo", now=later
    )
    assert read_link_token([SECRET], _token_of(fresh.unsubscribe_url), now=later) is not None
    assert read_link_token([OLD], _token_of(fresh.unsubscribe_url), now=later) is None


def test_a_token_for_another_purpose_does_not_open_a_link() -> None:
    confirm = sign(SECRET, CONFIRM, {"e": "karin@example.com", "s": "demo"}, now=NOW)
    assert read_link_token([SECRET], confirm, now=NOW) is None


def test_a_genuine_token_without_an_address_does_not_open_a_link() -> None:
    assert read_link_token([SECRET], sign(SECRET, MANAGE, {"s": "demo"}, now=NOW), now=NOW) is None


def test_old_keys_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NURTURE_SECRET_KEY", SECRET)
    monkeypatch.setenv("NURTURE_OLD_SECRET_KEYS", f'["{OLD}", "older-secret"]')
    assert Settings().secret_keys == [SECRET, OLD, "older-secret"]


def test_old_keys_come_from_nurture_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("NURTURE_SECRET_KEY", "NURTURE_OLD_SECRET_KEYS"):  # they would win
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "nurture.toml").write_text(
        f'secret_key = "{SECRET}"\nold_secret_keys = ["{OLD}"]\n', encoding="utf-8"
    )
    assert load_settings(tmp_path).secret_keys == [SECRET, OLD]


def test_a_placeholder_cannot_be_an_old_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Listed, it would let anyone sign links with "change-me".
    monkeypatch.setenv("NURTURE_OLD_SECRET_KEYS", '["change-me"]')
    with pytest.raises(ConfigurationError, match="old_secret_keys"):
        load_settings(tmp_path)
