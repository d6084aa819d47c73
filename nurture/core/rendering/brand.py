"""The brand as templates see it: ``brand.name``, ``brand.logo_url``, ``brand.colour``...

A marketer picks one colour. Used as it is for a link it may be unreadable (a
pale yellow on white, a navy on a dark-mode background), so the layout gets
variants worked out here: the colour darkened or lightened until it reads
against the background (WCAG's 4.5:1 for text), and the text colour for a
button filled with it. The maths is WCAG 2's relative luminance.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from nurture.core.model import Brand, merge_brands

DEFAULT_COLOUR = "#0b57d0"
"""The colour of the top bar, buttons and links when no brand gives one."""
LIGHT_CARD = "#ffffff"
DARK_CARD = "#1c1e22"
"""The card's background in the layout's light and dark schemes (keep in step
with ``templates/layout.html``)."""
_READABLE = 4.5  # WCAG AA contrast for body-size text

Rgb = tuple[float, float, float]


def _rgb(colour: str) -> Rgb:
    """``#rgb`` or ``#rrggbb`` as three channels in 0..1."""
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return (int(digits[0:2], 16) / 255, int(digits[2:4], 16) / 255, int(digits[4:6], 16) / 255)


def _hex(rgb: Rgb) -> str:
    return "#" + "".join(f"{round(channel * 255):02x}" for channel in rgb)


def _luminance(rgb: Rgb) -> float:
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(first: str, second: str) -> float:
    """WCAG contrast ratio of two colours, 1 (none) to 21 (black on white)."""
    a, b = sorted((_luminance(_rgb(first)), _luminance(_rgb(second))), reverse=True)
    return (a + 0.05) / (b + 0.05)


def readable_on(colour: str, background: str) -> str:
    """``colour``, moved towards black or white (whichever the background is
    not) just far enough to read as text on ``background``."""
    if contrast(colour, background) >= _READABLE:
        return _hex(_rgb(colour))
    towards = 0.0 if _luminance(_rgb(background)) > 0.18 else 1.0
    r, g, b = _rgb(colour)
    for step in range(1, 21):
        t = step / 20
        mixed = _hex((r + (towards - r) * t, g + (towards - g) * t, b + (towards - b) * t))
        if contrast(mixed, background) >= _READABLE:
            return mixed
    return _hex((towards, towards, towards))


def text_on(colour: str) -> str:
    """White or near-black, whichever reads better on a ``colour`` fill (a button)."""
    return "#ffffff" if contrast("#ffffff", colour) >= contrast("#111111", colour) else "#111111"


@lru_cache(maxsize=256)
def brand_context(own: Brand | None, project: Brand | None, sender_name: str) -> dict[str, Any]:
    """The ``brand`` template variable: the sequence's brand over the project's.

    Every key is always there (empty when not set), so ``{% if brand.logo_url %}``
    works in any layout. The logo's alt text falls back on the brand's name,
    then on the sender's. Cached: the result is the same for every email of a
    sequence, and templates cannot change it (the sandbox is immutable).
    """
    brand = merge_brands(own, project) or Brand()
    colour = brand.colour or DEFAULT_COLOUR
    return {
        "name": brand.name or "",
        "logo_url": brand.logo_url or "",
        "logo_width": brand.logo_width or "",
        "logo_height": brand.logo_height or "",
        "logo_alt": brand.logo_alt or brand.name or sender_name,
        "colour": colour,
        "link_colour": readable_on(colour, LIGHT_CARD),
        "link_colour_dark": readable_on(colour, DARK_CARD),
        "button_text": text_on(colour),
    }
