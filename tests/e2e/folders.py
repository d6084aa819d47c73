"""The working folder the e2e tests send from: ``nurture init``'s, made live.

``init`` writes its example sequence disabled and the base URL as localhost
(see :mod:`nurture.authoring.project`); tests that enroll and send switch the
example on, and give a public https base URL and a postal address of their
own (``tests.factories.POSTAL_ADDRESS``) when they send through a real
provider's transport.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from nurture.authoring.project import LOCAL_BASE_URL, PLACEHOLDER_POSTAL_ADDRESS
from nurture.cli.main import app
from tests.factories import POSTAL_ADDRESS

EXAMPLE = Path("sequences") / "sales-process.yaml"
PUBLIC_BASE_URL = "https://mail.nurture-tests.se"


def enable_example(folder: Path) -> None:
    """Set ``enabled: true`` in the example sequence ``init`` wrote into ``folder``.

    (``test_cli_first_project`` checks that ``init`` writes it disabled.)
    """
    path = folder / EXAMPLE
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\nenabled: false", "\nenabled: true", 1), encoding="utf-8")


def init_live(folder: Path, *, base_url: str = "https://mail.bergdesign.se") -> Path:
    """``folder`` made by ``nurture init`` with a sender, a postal address and
    ``base_url``, its example sequence enabled."""
    made = CliRunner().invoke(
        app,
        ["init", str(folder), "--from", "Maja Berg <maja@bergdesign.se>",
         "--postal-address", "Berg AB, Gatan 1, 11357 Stockholm, Sweden",
         "--base-url", base_url],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    enable_example(folder)
    return folder


def public_settings(config: str) -> str:
    """``init``'s nurture.toml text ``config`` with the public https base URL
    and a postal address of its own, as a real provider's transport wants."""
    for line, public in (
        (f'base_url = "{LOCAL_BASE_URL}"', f'base_url = "{PUBLIC_BASE_URL}"'),
        (
            f'postal_address = "{PLACEHOLDER_POSTAL_ADDRESS}"',
            f'postal_address = "{POSTAL_ADDRESS}"',
        ),
    ):
        assert line in config, line
        config = config.replace(line, public)
    return config
