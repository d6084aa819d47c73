"""The working folder the e2e tests send from: ``nurture init``'s, made live.

``init`` writes its example sequence disabled and the base URL as localhost
(see :mod:`nurture.authoring.project`); tests that enroll and send switch the
example on, and give a public https base URL when they send through a real
provider's transport.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLE = Path("sequences") / "sales-process.yaml"
PUBLIC_BASE_URL = "https://mail.nurture-tests.se"


def enable_example(folder: Path) -> None:
    """Set ``enabled: true`` in the example sequence ``init`` wrote into ``folder``.

    (``test_cli_first_project`` checks that ``init`` writes it disabled.)
    """
    path = folder / EXAMPLE
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\nenabled: false", "\nenabled: true", 1), encoding="utf-8")
