"""Rendering emails: templates in, complete emails and diagnostics out.

The rest of nurture imports only what ``__all__`` lists, from here:

- :class:`TemplateLibrary`: the templates under a folder, compiled and cached;
  build a new one to pick up edited files.
- :func:`render`: one step for one subscriber -> :class:`RenderedEmail`
  (subject, HTML, text, the pipeline's headers); a :class:`~nurture.errors.RenderError`
  names the template and line.
- :func:`check`: every step in every locale for sample subscribers -> a list of
  :class:`~nurture.errors.Diagnostic` (``nurture validate``).
- :func:`sparse_warnings`: where a subscriber with only an email address
  (:data:`SPARSE_SUBSCRIBER`) would read an empty value (``Hi ,``).
- :func:`footer_language`: which shipped footer texts a locale gets (``de-AT``
  → ``de``), or None: its emails get the sequence's language's, else English.
- :class:`RenderPlan`: the prepared shape of one template for one locale pair
  (:meth:`TemplateLibrary.plan`).
- :class:`Links`: the subscriber's signed URLs, built by the caller.
- :class:`ComposedEmail`: a rendered email with its envelope, for transports.
- :func:`track`: an email with its links through click tracking and an open
  pixel (:func:`track_links` for the links alone).

One module per concept does the work: ``loader`` (locale search path, Jinja
environment), ``placeholders`` (values as tokens, so costly conversions run once
per structure), ``context`` (template variables, footer texts), ``links``
(URLs, List-* headers, footer and link rules), ``compiled`` (a folder's
templates compiled and cached, :class:`RenderPlan`, failures' file:line),
``templates`` (:class:`TemplateLibrary`: one email from them), ``message``
(:class:`RenderedEmail` and its MIME form), ``envelope`` (:class:`ComposedEmail`),
``validation`` (:func:`check`) and ``sources`` (where a link or the footer is
written in a template, for its ``file:line:column``).
Their other public names are for each other and for the unit tests of those
pieces.
"""

from __future__ import annotations

from nurture.core.rendering.compiled import KeyPath, RenderPlan
from nurture.core.rendering.context import footer_language
from nurture.core.rendering.envelope import ComposedEmail
from nurture.core.rendering.links import Links
from nurture.core.rendering.message import (
    AddressEncodingError,
    RenderedEmail,
    ascii_address,
    header_text,
    needs_smtputf8,
)
from nurture.core.rendering.templates import TemplateLibrary, render
from nurture.core.rendering.tracking import track, track_links
from nurture.core.rendering.validation import (
    SPARSE_SUBSCRIBER,
    Positions,
    check,
    sparse_warnings,
)

__all__ = [
    "SPARSE_SUBSCRIBER",
    "AddressEncodingError",
    "ComposedEmail",
    "KeyPath",
    "Links",
    "Positions",
    "RenderPlan",
    "RenderedEmail",
    "TemplateLibrary",
    "ascii_address",
    "check",
    "footer_language",
    "header_text",
    "needs_smtputf8",
    "render",
    "sparse_warnings",
    "track",
    "track_links",
]
