"""Where the example content ships: in a wheel under ``nurture/_example``; in a
source checkout, the repository's own ``sequences/``, ``templates/`` and ``schemas/``."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def example_root() -> Path:
    bundled = _PACKAGE / "_example"
    if (bundled / "sequences").is_dir():
        return bundled
    return _PACKAGE.parent
