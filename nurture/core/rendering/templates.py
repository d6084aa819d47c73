"""Rendering one email of a sequence: subject, HTML part, text part and headers.

The templates come compiled and cached, with the email's locale and its
template and line for errors, from :mod:`nurture.core.rendering.compiled`;
:class:`TemplateLibrary` puts one email together from them.

``.html`` bodies extend ``layout.html`` and fill ``{% block content %}``.
``.md`` bodies are rendered by Jinja, converted by markdown-it (CommonMark; raw
HTML allowed: templates are trusted author content) and put into the layout's
content block. A ``{{ value }}`` in Markdown is always text: it is escaped for
HTML and never read as Markdown, so a subscriber named
``[Click](https://evil.example)`` cannot add a link.

The text part is ``<name>.txt`` from the body's folder (or a more specific
locale folder, never a fallback one), rendered without autoescaping; else it is
derived from the HTML. A standard footer is appended when it lacks the
unsubscribe URL or the postal address.

Values are rendered as placeholders so the costly conversions run once per
structure, not per email (:mod:`nurture.core.rendering.placeholders`).

Each email is rendered under its own budget (:mod:`nurture.core.budget`,
charged by the hooks of :mod:`nurture.core.sandbox`).
Construct a new :class:`TemplateLibrary` to pick up edited templates.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import css_inline
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from nurture.core.budget import RENDER_LIMITS, Limits, spending
from nurture.core.model import Brand, Localized, Sequence, Step, localized
from nurture.core.rendering.compiled import (
    CompiledTemplates,
    KeyPath,
    RenderFailure,
    RenderPlan,
    describe,
)
from nurture.core.rendering.context import template_context
from nurture.core.rendering.links import Links, footer_problem, list_headers, with_text_footer
from nurture.core.rendering.loader import MARKDOWN_VAR
from nurture.core.rendering.message import RenderedEmail, unicode_problem
from nurture.core.rendering.placeholders import (
    EMPTY_MARK,
    EMPTY_VAR,
    INERT_VAR,
    SLOTS_VAR,
    CachedPage,
    Pieces,
    Slots,
    html_to_text,
    remember,
    tokens_in,
)
from nurture.core.subscriber import Subscriber
from nurture.errors import Diagnostic

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class FirstLines:
    """What a reader sees first: the subject, the preheader and the body's first
    line of text, with :data:`EMPTY_MARK` where a value rendered empty."""

    subject: str
    preheader: str
    first_line: str
    plan: RenderPlan


def _index(sequence: Sequence, step: Step) -> int:
    return next((i for i, s in enumerate(sequence.steps) if s is step or s.id == step.id), 0)


def text_key(value: Localized, locale: str, default_locale: str) -> KeyPath:
    """The key path below a step's field of the text ``localized`` picks."""
    if isinstance(value, str):
        return ()
    chosen = localized(value, locale, default_locale)
    return next((key,) for key, text in value.items() if text is chosen)


class TemplateLibrary(CompiledTemplates):
    """The templates under ``templates_dir``, compiled and cached, and the emails
    rendered from them.

    Safe to share between threads (a race only repeats work).
    """

    def __init__(
        self,
        templates_dir: Path,
        *,
        reuse_structures: bool = True,
        limits: Limits = RENDER_LIMITS,
        brand: Brand | None = None,
    ) -> None:
        """``reuse_structures=False`` converts every email from scratch (slow): the
        reference the placeholder cache is checked against in tests. ``limits``
        bound the rendering of one email (see :mod:`nurture.core.sandbox`).
        ``brand`` is the project's (``[brand]`` in ``nurture.toml``): what a
        sequence's own ``brand`` does not set comes from it."""
        super().__init__(templates_dir)
        self.brand = brand
        self._reuse_structures = reuse_structures
        self.limits = limits
        self._markdown = MarkdownIt("commonmark", {"html": True})
        # Never fetch a stylesheet: rendering must not touch the network.
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)
        self._markdown_pages: dict[str, str | None] = {}
        self._pages: dict[str, CachedPage] = {}

    def render(
        self,
        sequence: Sequence,
        step: Step,
        subscriber: Subscriber,
        links: Links,
        postal_address: str,
    ) -> RenderedEmail:
        """Render ``step`` for ``subscriber``; a RenderError names template:line."""
        return self.render_with_plan(sequence, step, subscriber, links, postal_address)[0]

    def render_with_plan(
        self,
        sequence: Sequence,
        step: Step,
        subscriber: Subscriber,
        links: Links,
        postal_address: str,
        *,
        check_footer: bool = True,
    ) -> tuple[RenderedEmail, RenderPlan]:
        """:meth:`render`, also returning the plan the email was rendered from.

        ``check_footer=False`` lets validation report a missing footer as one
        problem among others rather than stop at it.
        """
        with spending(self.limits):  # one budget for every part of the email
            return self._render_email(
                sequence, step, subscriber, links, postal_address, check_footer
            )

    def _render_email(
        self,
        sequence: Sequence,
        step: Step,
        subscriber: Subscriber,
        links: Links,
        postal_address: str,
        check_footer: bool,
    ) -> tuple[RenderedEmail, RenderPlan]:
        try:
            plan = self.plan(step.template, subscriber.locale, sequence.locale)
        except RenderFailure as failure:
            raise RenderFailure(
                failure.diagnostic, ("steps", _index(sequence, step), "template")
            ) from None
        context = {
            **self.globals,
            **template_context(
                sequence,
                step,
                subscriber,
                links,
                postal_address,
                locale=plan.locale,
                project_brand=self.brand,
            ),
        }
        lines = self._render_lines(sequence, step, plan, context)
        context["step"] = {**context["step"], **lines}
        html, derive_text = self._render_html(plan, context)
        text = self.render_template(plan, plan.text, context) if plan.text else derive_text()
        text = with_text_footer(text, links, postal_address, context["t"]["unsubscribe"])
        # finalize refused a bad {{ value }} at its line already; what is left
        # (a |safe value, the footer's settings) is found here, at line 1.
        problem = unicode_problem(html) or unicode_problem(text)
        if problem is None and check_footer:
            problem = footer_problem(html, links, postal_address)
        if problem:
            raise RenderFailure(Diagnostic(plan.source, 1, 1, problem))
        headers = list_headers(
            links,
            sequence_id=sequence.id,
            sequence_name=sequence.name,
            sender_email=sequence.sender.email,
            step_id=step.id,
        )
        email = RenderedEmail(lines["subject"], lines["preheader"], html, text, headers)
        return email, plan

    def _render_html(
        self, plan: RenderPlan, context: dict[str, Any]
    ) -> tuple[str, Callable[[], str]]:
        """The final HTML, and a way to derive the text part from it."""
        if not self._reuse_structures:
            return self._render_plain(plan, context)
        slots = Slots()
        scope = {**context, SLOTS_VAR: slots}
        markdown_html: str | None = None
        if plan.markdown:
            source = self.render_template(plan, plan.body, scope)
            markdown_html = self._markdown_page(plan, source, slots, context)
            if markdown_html is None:
                return self._render_plain(plan, context)
            scope[MARKDOWN_VAR] = Markup(markdown_html)
        structure = self.render_template(plan, plan.page if plan.markdown else plan.body, scope)
        page = self._pages.get(structure)
        if page is None:
            page = self._new_page(plan, structure, slots, context, markdown_html)
            remember(self._pages, structure, page)
        if page.html is None:
            return self._render_plain(plan, context)
        values = slots.values
        html = page.html.fill([escape(value) for value in values])
        return html, lambda: page.text().fill(
            # In text, as in HTML, a line break in a value shows as a space.
            [v if v.isprintable() else _WHITESPACE.sub(" ", v) for v in values]
        )

    def _markdown_page(
        self, plan: RenderPlan, source: str, slots: Slots, context: dict[str, Any]
    ) -> str | None:
        """The Markdown structure as HTML (cached); None when it cannot be reused."""
        if source in self._markdown_pages:
            return self._markdown_pages[source]
        html: str | None = self._markdown.render(source)
        plain = self.render_template(plan, plan.body, context)
        escaped = [escape(value) for value in slots.values]
        if plain != Pieces.of(source).fill(escaped) or not tokens_in(source) <= tokens_in(
            html or ""
        ):
            html = None
        return remember(self._markdown_pages, source, html)

    def _new_page(
        self,
        plan: RenderPlan,
        structure: str,
        slots: Slots,
        context: dict[str, Any],
        markdown_html: str | None,
    ) -> CachedPage:
        # Once per structure: splicing the values in must give exactly what a
        # plain render gives, and inlining must keep every token.
        escaped = [escape(value) for value in slots.values]
        scope = dict(context)
        if markdown_html is not None:
            scope[MARKDOWN_VAR] = Markup(Pieces.of(markdown_html).fill(escaped))
        plain = self.render_template(plan, plan.page if plan.markdown else plan.body, scope)
        if plain != Pieces.of(structure).fill(escaped):
            return CachedPage(None)
        inlined = self._inline(plan, structure)
        return CachedPage(inlined if tokens_in(structure) <= tokens_in(inlined) else None)

    def _render_plain(
        self, plan: RenderPlan, context: dict[str, Any]
    ) -> tuple[str, Callable[[], str]]:
        """Everything per email, for a structure the cache cannot serve."""
        if plan.markdown:
            source = self.render_template(plan, plan.body, {**context, INERT_VAR: True})
            scope = {**context, MARKDOWN_VAR: Markup(self._markdown.render(source))}
            html = self._inline(plan, self.render_template(plan, plan.page, scope))
        else:
            html = self._inline(plan, self.render_template(plan, plan.body, context))
        return html, lambda: html_to_text(html)

    def _inline(self, plan: RenderPlan, html: str) -> str:
        # Fewer tags than the limit cannot nest deeper: most emails stop here.
        depth = nesting_depth(html) if html.count("<") > MAX_NESTING else 0
        if depth > MAX_NESTING:
            raise RenderFailure(
                Diagnostic(
                    plan.source, 1, 1,
                    f"the HTML nests elements {depth} deep (at most {MAX_NESTING}): "
                    "close the tags a template opens",
                )
            )  # fmt: skip
        try:
            return self._inliner.inline(html)
        except ValueError as exc:  # css_inline.InlineError, or a lone surrogate (|safe)
            problem = unicode_problem(html) or f"cannot inline CSS: {exc}"
            raise RenderFailure(Diagnostic(plan.source, 1, 1, problem)) from exc

    def first_lines(
        self,
        sequence: Sequence,
        step: Step,
        subscriber: Subscriber,
        links: Links,
        postal_address: str,
    ) -> FirstLines:
        """The subject, preheader and first line of the body for ``subscriber``,
        marking the values that render empty (for ``validate``; slow). Raises
        :class:`RenderFailure` as :meth:`render_with_plan` does."""
        with spending(self.limits):
            try:
                plan = self.plan(step.template, subscriber.locale, sequence.locale)
            except RenderFailure as failure:
                raise RenderFailure(
                    failure.diagnostic, ("steps", _index(sequence, step), "template")
                ) from None
            context = {
                **self.globals,
                **template_context(
                    sequence,
                    step,
                    subscriber,
                    links,
                    postal_address,
                    locale=plan.locale,
                    project_brand=self.brand,
                ),
                EMPTY_VAR: True,
            }
            lines = self._render_lines(sequence, step, plan, context)
            shown = {name: text.replace(EMPTY_MARK, "") for name, text in lines.items()}
            context["step"] = {**context["step"], **shown}
            body = self._render_content(plan, context)
        return FirstLines(lines["subject"], lines["preheader"], _first_line(body), plan)

    def _render_lines(
        self, sequence: Sequence, step: Step, plan: RenderPlan, context: dict[str, Any]
    ) -> dict[str, str]:
        """The step's subject and preheader; an error names the sequence
        file's key, not a template."""
        lines = {"subject": "", "preheader": ""}
        for field in lines:
            value: Localized | None = getattr(step, field)
            if value is None:
                continue
            source = localized(value, plan.locale, sequence.locale)
            key = ("steps", _index(sequence, step), field,
                   *text_key(value, plan.locale, sequence.locale))  # fmt: skip
            try:
                lines[field] = self.render_line(source, context)
            except Exception as exc:
                message = f"{field} of step {step.id!r}: {describe(exc, source, context)}"
                where = Diagnostic(f"<sequence {sequence.id}>", 1, 1, message)
                raise RenderFailure(where, key) from exc
            if len(lines[field]) > MAX_LINE:
                message = (
                    f"{field} of step {step.id!r} is {len(lines[field])} characters long "
                    f"(at most {MAX_LINE})"
                )
                raise RenderFailure(Diagnostic(f"<sequence {sequence.id}>", 1, 1, message), key)
            problem = unicode_problem(lines[field])  # a text without "{" is not rendered
            if problem is not None:
                message = f"{field} of step {step.id!r}: {problem}"
                raise RenderFailure(Diagnostic(f"<sequence {sequence.id}>", 1, 1, message), key)
        return lines

    def _render_content(self, plan: RenderPlan, context: dict[str, Any]) -> str:
        """The body's own text: a Markdown body as rendered by Jinja, or the
        ``content`` block of an HTML body with its tags removed."""
        if plan.markdown:
            return self.render_template(plan, plan.body, context)
        try:
            template = self.env.get_template(plan.body)
            block = template.blocks.get("content")
            if block is None:
                return ""
            html = "".join(block(template.new_context(context, shared=True)))
        except Exception as exc:  # the boundary: whatever a template raised
            raise RenderFailure(self.diagnose(exc, plan.source, context)) from exc
        return html_lib.unescape(_TAG.sub(" ", html))


_TAG = re.compile(r"<!--.*?-->|<[^>]*>", re.S)

MAX_LINE = 1000
"""The longest subject or preheader, in characters, once rendered: mail
clients show some sixty; longer is a mistake (or a subscriber's value of a
megabyte), and that one email fails rather than going out as megabytes of
header."""

MAX_NESTING = 500
"""The deepest nesting of HTML elements an email may have. The CSS inliner
(css_inline, native code) recurses per level and overflows its thread's stack
some ten thousand levels down, which kills the process (a segfault, not an
exception); a real email nests a few dozen."""

_ELEMENT = re.compile(r"<!--.*?-->|<(/?)([A-Za-z][A-Za-z0-9-]*)[^>]*?(/?)>", re.S)
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr"}
)  # fmt: skip  # elements without content: never opened


def nesting_depth(html: str) -> int:
    """How deep ``html``'s elements nest, counted from its tags: an upper bound
    (a tag the parser would close by itself, such as a second ``<p>``, counts
    as open), exact for well-formed HTML."""
    depth = deepest = 0
    for found in _ELEMENT.finditer(html):
        closing, name, self_closing = found.groups()
        if name is None or self_closing or name.lower() in _VOID:
            continue  # a comment, <br/>, <img>
        if closing:
            depth = max(depth - 1, 0)
        else:
            depth += 1
            deepest = max(deepest, depth)
    return deepest


def _first_line(text: str) -> str:
    """The first line with something on it (an empty value counts), spaces folded."""
    for line in text.splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


def render(
    library: TemplateLibrary,
    sequence: Sequence,
    step: Step,
    subscriber: Subscriber,
    links: Links,
    postal_address: str,
) -> RenderedEmail:
    """Render one email; the locale is the subscriber's, else the sequence's."""
    return library.render(sequence, step, subscriber, links, postal_address)
