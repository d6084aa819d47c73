"""Small builders for test sequences (plain dicts in the file format)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from nurture.app.settings import Settings
from nurture.core.model import Sequence

OFFER = {
    "name": "Review",
    "price": "4 900 kr",
    "checkout_url": "https://shop.example.com/checkout/sales-audit",
}


def sequence_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": 1,
        "id": "test-seq",
        "name": "Test sequence",
        "sender": {"name": "Anna", "email": "anna@example.com"},
        "locale": "en",
        "timezone": "Europe/Stockholm",
        "steps": [
            {"id": "welcome", "wait": 0, "subject": "Hi", "template": "welcome.md"},
            {
                "id": "offer",
                "wait": "2 days",
                "subject": "Offer",
                "template": "offer.html",
                "offer": dict(OFFER),
            },
        ],
    }
    data.update(overrides)
    return data


def make_sequence(**overrides: Any) -> Sequence:
    return Sequence.model_validate(sequence_dict(**overrides))


EXAMPLES = Path(__file__).resolve().parents[1]
POSTAL_ADDRESS = "Provbolaget AB, Provgatan 3, 111 29 Stockholm, Sweden"
"""A postal address that is none of nurture's samples: a real provider's
transport refuses to send with one of those (every footer shows it)."""


def example_workdir(tmp_path: Path) -> Settings:
    """Settings over a copy of the example sequences and templates in ``tmp_path``."""
    for name in ("sequences", "templates"):
        shutil.copytree(EXAMPLES / name, tmp_path / name)
    return Settings(
        sequences_dir=tmp_path / "sequences",
        templates_dir=tmp_path / "templates",
        secret_key="test-secret-not-a-placeholder",
        postal_address=POSTAL_ADDRESS,
        rate_limit=10_000.0,
    )
