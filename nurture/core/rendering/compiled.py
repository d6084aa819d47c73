"""A folder's templates, compiled and cached: found for a locale pair, run one at a time.

Templates are found along the locale search path (:mod:`nurture.core.rendering.loader`).
The email's ``locale`` is the subscriber's when the body template was found in
their folders, else the sequence's: a German subscriber who gets the Swedish
text also gets the Swedish subject and footer. :class:`CompiledTemplates` works
that out once per template and locale pair (a :class:`RenderPlan`), runs one
template or subject line at a time, and says where a failure is: a
:class:`RenderFailure` names the template file and line, or the key of the
sequence file. Putting those runs together into one email (Markdown, the
layout, the text part, the footer and headers) is
:mod:`nurture.core.rendering.templates`.

Templates run in an ImmutableSandboxedEnvironment (no calls to mutating
methods, so contexts can be shared) with ``StrictUndefined``, under a budget
per email (:mod:`nurture.core.sandbox`: time, loop iterations, output and
value sizes); a template past it fails that email with a RenderError naming
the template and line. No network; files are read only by the loader, and
only inside the templates folder. Construct a new
:class:`~nurture.core.rendering.templates.TemplateLibrary` to pick up edited
templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
    select_autoescape,
)
from jinja2.exceptions import SecurityError

from nurture.core.budget import BudgetExceeded
from nurture.core.files import read_text
from nurture.core.model import Sequence
from nurture.core.rendering.loader import (
    LAYOUT,
    MARKDOWN_PAGE,
    MAX_TEMPLATE_BYTES,
    LocaleEnvironment,
    LocaleLoader,
    TemplateRefused,
    internal_name,
    is_locale_tag,
    locale_search_path,
    present,
)
from nurture.core.rendering.message import NotUnicode
from nurture.core.rendering.placeholders import finalize, remember
from nurture.core.rendering.sources import (
    LinkIndex,
    LinkSite,
    footer_position,
    link_sites,
    mention,
)
from nurture.core.undefined import explain_undefined
from nurture.errors import Diagnostic, RenderError

KeyPath = tuple[str | int, ...]

_MOST_SOURCES = 50  # files read to place a link: a layout and a few includes
_NAMING = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)  # name a template


@dataclass(frozen=True)
class WrittenSource:
    """One template file an email is made of, with the links written in it."""

    file: str
    text: str
    links: list[LinkSite]
    layout: bool  # extended by another file: a layout, where the footer is


def _names(template: nodes.Expr) -> list[str]:
    """The template names an ``extends``/``include``/``import`` writes out."""
    if isinstance(template, nodes.Const) and isinstance(template.value, str):
        return [template.value]
    if isinstance(template, nodes.Const) and isinstance(template.value, (list, tuple)):
        return [name for name in template.value if isinstance(name, str)]
    if isinstance(template, (nodes.List, nodes.Tuple)):
        return [n for item in template.items for n in _names(item)]
    return []


@dataclass(frozen=True)
class RenderPlan:
    """The prepared shape of one body template for one pair of locales.

    :meth:`CompiledTemplates.plan` works it out once (which folder the body is
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


RECURSION = (
    "recursion without end: a template that includes, extends or imports itself "
    "(or one that includes it back), or a macro that calls itself too deep"
)


class RenderFailure(RenderError):
    """A RenderError that knows where: a template line, or a key of the sequence file."""

    def __init__(self, diagnostic: Diagnostic, key: KeyPath | None = None) -> None:
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic
        self.key = key


def describe(
    exc: BaseException, source: str | None = None, scope: Mapping[str, Any] | None = None
) -> str:
    """What went wrong, for the author; with the ``source`` that raised and the
    ``scope`` it ran with, an undefined name is explained (see
    :func:`~nurture.core.undefined.explain_undefined`)."""
    if isinstance(exc, RecursionError):
        return RECURSION
    if isinstance(exc, UndefinedError) and source is not None and scope is not None:
        explained = explain_undefined(exc.message or "", source, scope)
        if explained is not None:
            return explained.message
    if isinstance(exc, NotUnicode):
        return str(exc)
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


class CompiledTemplates:
    """The templates under ``templates_dir``, compiled and cached, each run on
    its own; :class:`~nurture.core.rendering.templates.TemplateLibrary` renders
    whole emails from them.

    Safe to share between threads (a race only repeats work).
    """

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = Path(templates_dir)
        self._loader = LocaleLoader(self.templates_dir)
        self.env = LocaleEnvironment(
            loader=self._loader,
            undefined=StrictUndefined,
            # .md too: values are escaped before markdown-it sees them. Subjects
            # (from_string) are plain-text headers: not escaped.
            autoescape=select_autoescape(["html", "htm", "md"], default_for_string=False),
            finalize=finalize,
            auto_reload=False,
        )
        self.globals = dict(self.env.globals)  # range, dict, namespace...: see _run
        self._templates: dict[str, Template] = {}
        self._lines: dict[str, Template] = {}
        self._plans: dict[tuple[str, str | None, str], RenderPlan] = {}
        self._sources_of: dict[RenderPlan, list[WrittenSource]] = {}
        self._link_index: dict[RenderPlan, LinkIndex] = {}

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

    def own_template(self, template: str, locale: str) -> Path | None:
        """``template`` in ``locale``'s own folders (``en-GB/``, then ``en/``), or
        None: a subscriber in ``locale`` then gets the email of the sequence's
        locale, its subject included."""
        try:
            return self._loader.resolve(locale_search_path(locale, "")[:-1], template)
        except TemplateNotFound:  # a name with "..": reported when it is rendered
            return None

    def footer_layout(self, locale: str, default_locale: str) -> Path | None:
        """The layout emails in ``locale`` are put into, when it (or a template
        it includes) shows the footer texts ``t``; None when it writes its own
        footer, or cannot be read (rendering reports why)."""
        folders = locale_search_path(locale, default_locale)
        try:
            path = self._loader.resolve(folders, LAYOUT)
        except TemplateNotFound:
            return None
        if path is None:
            return None
        seen: set[str] = set()
        names = [LAYOUT]
        while names:
            name = names.pop()
            if name in seen:
                continue
            seen.add(name)
            try:
                source, _, _ = self._loader.get_source(self.env, internal_name(folders, name))
                tree = self.env.parse(source)
            except Exception:  # reported with its place when it is rendered
                continue
            if "t" in meta.find_undeclared_variables(tree):
                return path
            names.extend(n for n in meta.find_referenced_templates(tree) if n is not None)
        return None

    def body_structure(self, plan: RenderPlan) -> tuple[str, nodes.Template] | None:
        """The body template's source and parsed tree, or None when it cannot be
        read or parsed (rendering reports why)."""
        try:
            source, filename, _ = self._loader.get_source(self.env, plan.body)
            return source, self.env.parse(source, filename=filename)
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
        found = next((i for i, path in enumerate(candidates) if present(path)), None)
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

    def render_template(self, plan: RenderPlan, name: str, scope: dict[str, Any]) -> str:
        try:
            template = self._templates.get(name)
            if template is None:
                template = remember(self._templates, name, self.env.get_template(name))
            return self._run(template, scope)
        except Exception as exc:  # the boundary: whatever a template raised
            raise RenderFailure(self.diagnose(exc, plan.source, scope)) from exc

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
            self.env.handle_exception()  # re-raises with template file:line frames

    def render_line(self, source: str, context: dict[str, Any]) -> str:
        """A subject or preheader: plain text, newlines folded (no header injection)."""
        if "{" not in source:  # no Jinja syntax: the text is its own rendering
            return " ".join(source.split())
        template = self._lines.get(source)
        if template is None:
            template = remember(self._lines, source, self.env.from_string(source))
        return " ".join(self._run(template, context).split())

    def diagnose(
        self, exc: BaseException, fallback: str, scope: Mapping[str, Any] | None = None
    ) -> Diagnostic:
        if isinstance(exc, TemplateSyntaxError):
            return Diagnostic(exc.filename or fallback, exc.lineno or 1, 1, describe(exc))
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
        return Diagnostic(file, line, 1, describe(exc))

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

    def link_places(self, plan: RenderPlan, href: str) -> list[tuple[str, int, int]]:
        """Where the link to ``href`` in an email of ``plan`` is written: (file,
        line, column) of each link written out with that target in the files
        the email is made of (the body, the layout, what they include), else
        of the one link built from values that fits it best, else the body's
        first line."""
        index = self._link_index.get(plan)
        if index is None:
            files = [(source.file, source.links) for source in self._sources(plan)]
            index = remember(self._link_index, plan, LinkIndex(files))
        return index.places(href) or [(plan.source, 1, 1)]

    def footer_place(self, plan: RenderPlan, *, unseen_link: bool) -> tuple[str, int, int]:
        """Where to look when an email of ``plan`` lacks its footer: with
        ``unseen_link``, the unsubscribe link no reader sees; else the footer of
        the layout at the top of what the body extends (1:1 when it has none
        to point at)."""
        sources = self._sources(plan)
        if unseen_link:
            for source in sorted(sources, key=lambda s: not s.layout):  # the layout's first
                found = mention(source.text, "unsubscribe_url")
                if found is not None:
                    return (source.file, *found)
        layout = next((s for s in reversed(sources) if s.layout), None)
        if layout is None:
            return plan.source, 1, 1
        found = footer_position(layout.text) or mention(layout.text, "postal_address")
        return (layout.file, *(found or (1, 1)))

    def _sources(self, plan: RenderPlan) -> list[WrittenSource]:
        """The files an email of ``plan`` is made of, read: the body, then what
        it extends, includes and imports (by a name written out), in turn."""
        cached = self._sources_of.get(plan)
        if cached is not None:
            return cached
        pending = [(plan.body, False), *([(plan.page, True)] if plan.markdown else [])]
        seen: set[str] = set()
        found: list[WrittenSource] = []
        while pending and len(seen) < _MOST_SOURCES:
            name, extended = pending.pop(0)
            if name in seen:
                continue
            seen.add(name)
            try:
                text, filename, _ = self._loader.get_source(self.env, name)
                tree = self.env.parse(text, filename=filename)
            except Exception:  # unreadable or broken: rendering says where
                continue
            for node in tree.find_all(_NAMING):
                assert isinstance(node, _NAMING)
                for other in _names(node.template):
                    pending.append(
                        (self.env.join_path(other, name), isinstance(node, nodes.Extends))
                    )
            if filename is None or filename.startswith("<"):
                continue  # the page a Markdown body is put into: nothing written there
            links = link_sites(text, markdown=filename.endswith(".md"))
            found.append(WrittenSource(filename, text, links, layout=extended))
        return remember(self._sources_of, plan, found)

    def locate(self, plan: RenderPlan, needles: tuple[str, ...]) -> tuple[str, int]:
        """The file and line where one of ``needles`` is written (body, then layout)."""
        for name in (plan.body, internal_name(plan.folders, LAYOUT)):
            try:
                source, filename, _ = self._loader.get_source(self.env, name)
            except (TemplateNotFound, TemplateRefused):
                continue
            for number, line in enumerate(source.splitlines(), start=1):
                if any(needle in line for needle in needles):
                    return filename or plan.source, number
        return plan.source, 1
