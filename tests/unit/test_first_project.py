"""The pieces of a clean first project: the ``enabled`` flag, the example made
safe by ``init``, the example values ``validate`` warns about, and the mailto:
fallback of ``List-Unsubscribe``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from nurture.authoring.checks import is_example_address
from nurture.authoring.project import parse_sender, starter_sequence
from nurture.core.loader import parse_sequence
from nurture.core.model import Sender
from nurture.core.rendering import Links
from nurture.core.rendering.links import list_headers
from nurture.sending.composer import build_links
from tests.unit.test_file_format import GOOD

ROOT = Path(__file__).resolve().parents[2]


def test_enabled_true_keeps_the_version_and_false_changes_it() -> None:
    plain, _ = parse_sequence(GOOD, "seq.yaml")
    on, _ = parse_sequence(GOOD.replace("name: Demo\n", "name: Demo\nenabled: true\n"), "s.yaml")
    off, _ = parse_sequence(GOOD.replace("name: Demo\n", "name: Demo\nenabled: false\n"), "s.yaml")
    assert plain is not None and on is not None and off is not None
    # Versions recorded before the key existed stay valid; a disabled one is its own.
    assert plain.version == on.version != off.version
    assert plain.sequence.enabled and not off.sequence.enabled


def test_the_example_made_safe_loads_disabled_with_the_given_sender() -> None:
    text = (ROOT / "sequences" / "sales-process.yaml").read_text(encoding="utf-8")
    # Quotes and non-ASCII survive the YAML the sender is written as.
    safe = starter_sequence(text, Sender(name='Åsa "Ace" Berg', email="asa@bergdesign.se"))
    loaded, problems = parse_sequence(safe, "sales-process.yaml")
    assert problems == [] and loaded is not None
    assert not loaded.sequence.enabled
    assert loaded.sequence.sender.name == 'Åsa "Ace" Berg'
    assert loaded.sequence.sender.email == loaded.sequence.sender.reply_to == "asa@bergdesign.se"
    assert loaded.sequence.trigger is not None  # kept, but a disabled trigger enrolls nobody


def test_a_sender_is_a_name_and_an_address() -> None:
    sender = parse_sender("Maja Berg <Maja@BergDesign.se>")
    assert (sender.name, sender.email) == ("Maja Berg", "Maja@bergdesign.se")
    with pytest.raises(ValueError, match="give a name too"):
        parse_sender("maja@bergdesign.se")


@pytest.mark.parametrize(
    ("address", "example"),
    [
        ("anna@example.com", True),
        ("anna@mail.example.org", True),
        ("anna@shop.test", True),
        ("anna@bergdesign.se", False),
        ("anna@notexample.com", False),
    ],
)
def test_example_addresses_are_the_reserved_domains(address: str, example: bool) -> None:
    assert is_example_address(address) is example


def test_list_unsubscribe_offers_the_mailbox_after_the_https_link() -> None:
    links = build_links(
        "https://mail.bergdesign.se",
        "a-secret-for-the-test",
        "k@bergdesign.se",
        "welcome",
        now=datetime(2026, 11, 27, tzinfo=UTC),
        unsubscribe_mailbox="unsubscribe@bergdesign.se",
    )
    headers = list_headers(
        links, sequence_id="welcome", sequence_name="W", sender_email="a@b.se", step_id="one"
    )
    assert headers["List-Unsubscribe"] == (
        f"<{links.unsubscribe_url}>, <mailto:unsubscribe@bergdesign.se?subject=unsubscribe>"
    )
    plain = Links("https://x.se/u/t", "https://x.se/p/t")
    assert (
        list_headers(
            plain, sequence_id="w", sequence_name="W", sender_email="a@b.se", step_id="one"
        )["List-Unsubscribe"]
        == "<https://x.se/u/t>"
    )
