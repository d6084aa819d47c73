"""Rendering emails: the names the rest of nurture imports, from one place.

The work is done by one module per concept:

- :mod:`nurture.core.rendering.loader`: the locale search path, the loader and
  the Jinja environment.
- :mod:`nurture.core.rendering.placeholders`: values rendered as tokens, so CSS inlining,
  Markdown and the text part run once per structure; :func:`html_to_text`.
- :mod:`nurture.core.rendering.context`: the template variables and
  :data:`FOOTER_STRINGS`.
- :mod:`nurture.core.rendering.templates`: :class:`TemplateLibrary` and
  :func:`render_step`.
- :mod:`nurture.core.rendering.message`: :class:`RenderedEmail` and its MIME form.
- :mod:`nurture.core.rendering.validation`: :func:`validate_rendering`.
"""

from __future__ import annotations

from nurture.core.rendering.context import FOOTER_STRINGS, template_context
from nurture.core.rendering.context import footer_strings as footer_strings
from nurture.core.rendering.links import Links
from nurture.core.rendering.loader import LAYOUT as LAYOUT
from nurture.core.rendering.loader import locale_search_path
from nurture.core.rendering.message import RenderedEmail
from nurture.core.rendering.placeholders import html_to_text
from nurture.core.rendering.templates import KeyPath as KeyPath
from nurture.core.rendering.templates import TemplateLibrary, render_step
from nurture.core.rendering.validation import Positions as Positions
from nurture.core.rendering.validation import validate_rendering

__all__ = [
    "FOOTER_STRINGS",
    "Links",
    "RenderedEmail",
    "TemplateLibrary",
    "html_to_text",
    "locale_search_path",
    "render_step",
    "template_context",
    "validate_rendering",
]
