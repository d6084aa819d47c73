"""One time zone check and one locale check, wherever a zone or locale comes in."""

from __future__ import annotations

import json

import pytest

from nurture.core.decisions import subscriber_zone
from nurture.core.loader import parse_sequence
from nurture.core.places import check_locale, check_timezone
from nurture.core.subscriber import Subscriber
from tests.factories import make_sequence, sequence_dict

# Names ZoneInfo() opens (files of the zoneinfo folder) that are not places.
NOT_PLACES = ["localtime", "Factory", "posixrules"]


def _sequence_problems(**overrides: str) -> list[str]:
    loaded, diagnostics = parse_sequence(json.dumps(sequence_dict(**overrides)), "seq.yaml")
    assert (loaded is None) == bool(diagnostics)
    return [d.message for d in diagnostics]


@pytest.mark.parametrize("zone", ["Europe/Stockholm", "UTC", "America/Argentina/Buenos_Aires"])
def test_iana_zones_are_accepted(zone: str) -> None:
    assert check_timezone(zone) == zone
    assert _sequence_problems(timezone=zone) == []


@pytest.mark.parametrize("zone", [*NOT_PLACES, "Mars/Olympus", ""])
def test_a_sequence_refuses_what_is_not_a_place(zone: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone") as refused:
        check_timezone(zone)
    # The loader says exactly what the shared check says, after the field name.
    assert _sequence_problems(timezone=zone) == [f"timezone: {refused.value}"]


def test_a_near_miss_gets_a_hint() -> None:
    with pytest.raises(ValueError, match="did you mean 'Europe/Stockholm'"):
        check_timezone("europe/stockholm")


def test_a_stored_zone_that_is_no_place_falls_back_to_the_sequence() -> None:
    sequence = make_sequence(timezone="Europe/Stockholm")
    for zone in NOT_PLACES:
        subscriber = Subscriber(email="a@example.com", timezone=zone)
        assert subscriber_zone(subscriber, sequence).key == "Europe/Stockholm"
    known = Subscriber(email="a@example.com", timezone="Asia/Tokyo")
    assert subscriber_zone(known, sequence).key == "Asia/Tokyo"


@pytest.mark.parametrize(
    ("given", "tag"), [("sv", "sv"), ("sv_se", "sv-SE"), ("en-GB", "en-GB"), ("pt_BR", "pt-BR")]
)
def test_locales_are_written_as_bcp47_tags(given: str, tag: str) -> None:
    assert check_locale(given) == tag


def test_a_sequence_keeps_its_locale_as_written() -> None:
    # Step texts are keyed by the tag as the marketer wrote it.
    assert make_sequence(locale="sv_SE").locale == "sv_SE"


@pytest.mark.parametrize("tag", ["xx-YY", "", "not a locale"])
def test_unknown_locales_are_refused_alike(tag: str) -> None:
    with pytest.raises(ValueError, match="unknown locale") as refused:
        check_locale(tag)
    assert _sequence_problems(locale=tag) == [f"locale: {refused.value}"]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("en_US.UTF-8", "write the locale 'en_US.UTF-8' as the tag 'en-US'"),
        ("und", "write the locale 'und' as the tag 'en-US'"),
        ("EN", "write the locale 'EN' as the tag 'en'"),
        ("sr@latin", "write the locale 'sr@latin' as a tag such as sv or en-GB"),
    ],
)
def test_a_sequence_locale_must_be_written_as_the_tag_it_names(written: str, message: str) -> None:
    """Babel reads these, but templates were then looked up in no locale folder
    ('template not found') while preview wrote files under another tag."""
    assert _sequence_problems(locale=written) == [f"locale: {message}"]
