"""Rendering one email of a sequence: subject, HTML part, text part and headers.

Templates are found along the locale search path (:mod:`nurture.core.rendering.loader`).
The email's ``locale`` is the subscriber's when the body template was found in
their folders, else the sequence's: a German subscriber who gets the Swedish
text also gets the Swedish subject and footer.

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

Templates run in an ImmutableSandboxedEnvironment (no calls to mutating
methods, so contexts can be shared) with ``StrictUndefined``, under a budget
per email (:mod:`nurture.core.sandbox`: time, loop iterations, output and
value sizes); a template past it fails that email with a RenderError naming
the template and line. No network; files are read only by the loader, and
only inside the templates folder. Construct a new
:class:`TemplateLibrary` to pick up edited templates.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import (
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
    select_autoescape,
)
from jinja2.exceptions import SecurityError
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from nurture.core.files import read_text
from nurture.core.model import Brand, Localized, Sequence, Step, localized
from nurture.core.rendering.context import template_context
from nurture.core.rendering.links import Links, footer_problem, list_headers, with_text_footer
from nurture.core.rendering.loader import (
    LAYOUT,
    MARKDOWN_PAGE,
    MARKDOWN_VAR,
    MAX_TEMPLATE_BYTES,
    LocaleEnvironment,
    LocaleLoader,
    TemplateRefused,
    internal_name,
    is_locale_tag,
    locale_search_path,
)
from nurture.core.rendering.message import RenderedEmail
from nurture.core.rendering.placeholders import (
    EMPTY_MARK,
    EMPTY_VAR,
    INERT_VAR,
    SLOTS_VAR,
    CachedPage,
    Pieces,
    Slots,
    finalize,
    html_to_text,
    remember,
    tokens_in,
)
from nurture.core.sandbox import RENDER_LIMITS, BudgetExceeded, Limits, spending
from nurture.core.subscriber import Subscriber
from nurture.core.undefined import explain_undefined
from nurture.errors import Diagnostic, RenderError

KeyPath = tuple[str | int, ...]
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class RenderPlan:
    """The prepared shape of one body template for one pair of locales.

    :meth:`TemplateLibrary.plan` works it out once (which folder the body is
    found in, whether it is Markdown, whether a ``.txt`` sibling exists, which
    locale the email is in) and caches it; every email of that step and locale
    pair is rendered from it.
    """

    folders: tuple[str, ...]
    locale: str
    source: str  # the body template's file, as a path under templates_dir
    body: str  # internal names (see internal_name) from here on
    page: str  # the layout page a Markdown body is put into
    text: str | None  # the .txt sibling, when there is one
    markdown: bool


@dataclass(frozen=True)
class FirstLines:
    """What a reader sees first: the subject, the preheader and the body's first
    line of text, with :data:`EMPTY_MARK` where a value rendered empty."""

    subject: str
    preheader: str
    first_line: str
    plan: RenderPlan


class RenderFailure(RenderError):
    """A RenderError that knows where: a template line, or a key of the sequence file."""

    def __init__(self, diagnostic: Diagnostic, key: KeyPath | None = None) -> None:
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic
        self.key = key


def _describe(
    exc: BaseException, source: str | None = None, scope: Mapping[str, Any] | None = None
) -> str:
    """What went wrong, for the author; with the ``source`` that raised and the
    ``scope`` it ran with, an undefined name is explained (see
    :func:`~nurture.core.undefined.explain_undefined`)."""
    if isinstance(exc, UndefinedError) and source is not None and scope is not None:
        explained = explain_undefined(exc.message or "", source, scope)
        if explained is not None:
            return explained.message
    if isinstance(exc, BudgetExceeded):
        return f"rendering stopped: {exc}"
    if isinstance(exc, TemplateRefused):
        return exc.reason
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    if isinstance(exc, UndefinedError):
        return f"undefined variable: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {exc}"
    if isinstance(exc, TemplateNotFound):
        return str(exc.message)
    return f"{type(exc).__name__}: {exc}"


def _index(sequence: Sequence, step: Step) -> int:
    return next((i for i, s in enumerate(sequence.steps) if s is step or s.id == step.id), 0)


def text_key(value: Localized, locale: str, default_locale: str) -> KeyPath:
    """The key path below a step's field of the text ``localized`` picks."""
    if isinstance(value, str):
        return ()
    chosen = localized(value, locale, default_locale)
    return next((key,) for key, text in value.items() if text is chosen)


class TemplateLibrary:
    """The templates under ``templates_dir``, compiled and cached.

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
        self.templates_dir = Path(templates_dir)
        self.brand = brand
        self._reuse_structures = reuse_structures
        self.limits = limits
        self._loader = LocaleLoader(self.templates_dir)
        self._env = LocaleEnvironment(
            loader=self._loader,
            undefined=StrictUndefined,
            # .md too: values are escaped before markdown-it sees them. Subjects
            # (from_string) are plain-text headers: not escaped.
            autoescape=select_autoescape(["html", "htm", "md"], default_for_string=False),
            finalize=finalize,
            auto_reload=False,
        )
        self._markdown = MarkdownIt("commonmark", {"html": True})
        # Never fetch a stylesheet: rendering must not touch the network.
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)
        self._globals = dict(self._env.globals)  # range, dict, namespace...: see _run
        self._templates: dict[str, Template] = {}
        self._lines: dict[str, Template] = {}
        self._plans: dict[tuple[str, str | None, str], RenderPlan] = {}
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

    def find(self, template: str, locale: str | None, default_locale: str) -> Path | None:
        """The file ``template`` resolves to for a subscriber's locale, or None."""
        try:
            return Path(self.plan(template, locale, default_locale).source)
        except RenderError:
            return None

    def locales_for(self, sequence: Sequence) -> list[str]:
        """The sequence's locale, then every locale folder holding one of its templates."""
        names = {step.template for step in sequence.steps}
        found = set()
        for name in self._loader.list_templates():
            folder, _, rest = name.partition("/")
            if rest in names and is_locale_tag(folder):
                found.add(folder)
        return [sequence.locale, *sorted(found - {sequence.locale})]

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
            **self._globals,
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
        text = self._render(plan, plan.text, context) if plan.text else derive_text()
        text = with_text_footer(text, links, postal_address, context["t"]["unsubscribe"])
        problem = footer_problem(html, links, postal_address) if check_footer else None
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
            source = self._render(plan, plan.body, scope)
            markdown_html = self._markdown_page(plan, source, slots, context)
            if markdown_html is None:
                return self._render_plain(plan, context)
            scope[MARKDOWN_VAR] = Markup(markdown_html)
        structure = self._render(plan, plan.page if plan.markdown else plan.body, scope)
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
        plain = self._render(plan, plan.body, context)
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
        plain = self._render(plan, plan.page if plan.markdown else plan.body, scope)
        if plain != Pieces.of(structure).fill(escaped):
            return CachedPage(None)
        inlined = self._inline(plan, structure)
        return CachedPage(inlined if tokens_in(structure) <= tokens_in(inlined) else None)

    def _render_plain(
        self, plan: RenderPlan, context: dict[str, Any]
    ) -> tuple[str, Callable[[], str]]:
        """Everything per email, for a structure the cache cannot serve."""
        if plan.markdown:
            source = self._render(plan, plan.body, {**context, INERT_VAR: True})
            scope = {**context, MARKDOWN_VAR: Markup(self._markdown.render(source))}
            html = self._inline(plan, self._render(plan, plan.page, scope))
        else:
            html = self._inline(plan, self._render(plan, plan.body, context))
        return html, lambda: html_to_text(html)

    def _inline(self, plan: RenderPlan, html: str) -> str:
        try:
            return self._inliner.inline(html)
        except ValueError as exc:  # css_inline.InlineError
            raise RenderFailure(Diagnostic(plan.source, 1, 1, f"cannot inline CSS: {exc}")) from exc

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
                **self._globals,
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
            try:
                lines[field] = self._render_line(source, context)
            except Exception as exc:
                key = ("steps", _index(sequence, step), field,
                       *text_key(value, plan.locale, sequence.locale))  # fmt: skip
                message = f"{field} of step {step.id!r}: {_describe(exc, source, context)}"
                where = Diagnostic(f"<sequence {sequence.id}>", 1, 1, message)
                raise RenderFailure(where, key) from exc
        return lines

    def _render_content(self, plan: RenderPlan, context: dict[str, Any]) -> str:
        """The body's own text: a Markdown body as rendered by Jinja, or the
        ``content`` block of an HTML body with its tags removed."""
        if plan.markdown:
            return self._render(plan, plan.body, context)
        try:
            template = self._env.get_template(plan.body)
            block = template.blocks.get("content")
            if block is None:
                return ""
            html = "".join(block(template.new_context(context, shared=True)))
        except Exception as exc:  # the boundary: whatever a template raised
            raise RenderFailure(self._diagnose(exc, plan.source, context)) from exc
        return html_lib.unescape(_TAG.sub(" ", html))

    def body_structure(self, plan: RenderPlan) -> tuple[str, nodes.Template] | None:
        """The body template's source and parsed tree, or None when it cannot be
        read or parsed (rendering reports why)."""
        try:
            source, filename, _ = self._loader.get_source(self._env, plan.body)
            return source, self._env.parse(source, filename=filename)
        except Exception:  # reported with its place when it is rendered
            return None

    def plan(self, template: str, locale: str | None, default_locale: str) -> RenderPlan:
        """The plan of ``template`` for a subscriber's locale; RenderFailure when missing."""
        key = (template, locale, default_locale)
        plan = self._plans.get(key)
        if plan is None:
            plan = remember(self._plans, key, self._new_plan(template, locale, default_locale))
        return plan

    def _new_plan(self, template: str, locale: str | None, default_locale: str) -> RenderPlan:
        folders = locale_search_path(locale, default_locale)
        try:
            candidates = self._loader.candidates(folders, template)
        except TemplateNotFound:
            candidates = []
        found = next((i for i, path in enumerate(candidates) if path.is_file()), None)
        if found is None:
            looked = ", ".join(str(path) for path in candidates)
            message = f"template {template!r} not found (looked in {looked})"
            raise RenderFailure(Diagnostic(template, 1, 1, message))
        own = locale_search_path(locale, "")[:-1]  # the subscriber's folders
        text_name = template.rsplit(".", 1)[0] + ".txt"
        # The text part must be in the body's language: a .txt counts in the
        # body's folder or a more specific one, never in a fallback folder.
        has_text = self._loader.resolve(folders[: found + 1], text_name) is not None
        return RenderPlan(
            folders=folders,
            locale=own[0] if folders[found] in own else default_locale,
            source=str(candidates[found]),
            body=internal_name(folders, template),
            page=internal_name(folders, MARKDOWN_PAGE),
            text=internal_name(folders, text_name) if has_text else None,
            markdown=template.endswith(".md"),
        )

    def _render(self, plan: RenderPlan, name: str, scope: dict[str, Any]) -> str:
        try:
            template = self._templates.get(name)
            if template is None:
                template = remember(self._templates, name, self._env.get_template(name))
            return self._run(template, scope)
        except Exception as exc:  # the boundary: whatever a template raised
            raise RenderFailure(self._diagnose(exc, plan.source, scope)) from exc

    def _run(self, template: Template, scope: dict[str, Any]) -> str:
        # Template.render copies the variables and merges in the globals (a
        # ChainMap) on every call, ~10 µs each of the 3-4 renders of an email.
        # The scope already holds the globals, so the context shares it; Jinja
        # never writes to a context's parent.
        try:
            # Runs inside render_with_plan's budget, which already counts
            # every value and every loop's text as it is produced.
            return "".join(template.root_render_func(template.new_context(scope, shared=True)))
        except Exception:
            self._env.handle_exception()  # re-raises with template file:line frames

    def _render_line(self, source: str, context: dict[str, Any]) -> str:
        """A subject or preheader: plain text, newlines folded (no header injection)."""
        if "{" not in source:  # no Jinja syntax: the text is its own rendering
            return " ".join(source.split())
        template = self._lines.get(source)
        if template is None:
            template = remember(self._lines, source, self._env.from_string(source))
        return " ".join(self._run(template, context).split())

    def _diagnose(
        self, exc: BaseException, fallback: str, scope: Mapping[str, Any] | None = None
    ) -> Diagnostic:
        if isinstance(exc, TemplateSyntaxError):
            return Diagnostic(exc.filename or fallback, exc.lineno or 1, 1, _describe(exc))
        if isinstance(exc, TemplateRefused):
            return Diagnostic(str(exc.path), exc.line, exc.column, exc.reason)
        # Jinja rewrites tracebacks so template frames carry the template's file
        # name and line; the innermost one is where the error is.
        file, line = fallback, 1
        frame = exc.__traceback__
        while frame is not None:
            if frame.tb_frame.f_code.co_filename in self._loader.files:
                file, line = frame.tb_frame.f_code.co_filename, frame.tb_lineno
            frame = frame.tb_next
        if isinstance(exc, UndefinedError) and scope is not None:
            explained = self._explain(exc, file, line, scope)
            if explained is not None:
                return explained
        return Diagnostic(file, line, 1, _describe(exc))

    def _explain(
        self, exc: UndefinedError, file: str, line: int, scope: Mapping[str, Any]
    ) -> Diagnostic | None:
        """An undefined name explained from the template line that used it."""
        try:
            text = read_text(Path(file), limit=MAX_TEMPLATE_BYTES, inside=self.templates_dir)
        except (OSError, TemplateRefused):
            return None
        lines = text.splitlines()
        source = lines[line - 1] if 0 < line <= len(lines) else ""
        explained = explain_undefined(exc.message or "", source, scope)
        if explained is None:
            return None
        column = explained.offset + 1 if explained.offset is not None else 1
        return Diagnostic(file, line, column, explained.message)

    def locate(self, plan: RenderPlan, needles: tuple[str, ...]) -> tuple[str, int]:
        """The file and line where one of ``needles`` is written (body, then layout)."""
        for name in (plan.body, internal_name(plan.folders, LAYOUT)):
            try:
                source, filename, _ = self._loader.get_source(self._env, name)
            except (TemplateNotFound, TemplateRefused):
                continue
            for number, line in enumerate(source.splitlines(), start=1):
                if any(needle in line for needle in needles):
                    return filename or plan.source, number
        return plan.source, 1


_TAG = re.compile(r"<!--.*?-->|<[^>]*>", re.S)


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
