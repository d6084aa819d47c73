"""Rendering one email of a sequence: subject, HTML part, text part and headers.

Templates
    ``templates_dir/layout.html`` is the shared layout; ``<locale>/<name>`` are
    locale variants. For a subscriber with locale L in a sequence with locale S a
    name is looked up in ``L/``, ``<language of L>/``, ``S/``, ``<language of
    S>/`` and finally the root. ``{% extends %}`` and ``{% include %}`` resolve
    along the same search path (it travels in the internal template name, see
    ``_Environment.join_path``), so ``sv/layout.html`` overrides the layout for
    Swedish emails. The email's ``locale`` is L when the body template was found
    in L's folders, else S: a German subscriber who gets the Swedish text also
    gets the Swedish subject and footer.

    ``.html`` bodies extend ``layout.html`` and fill ``{% block content %}``.
    ``.md`` bodies are rendered by Jinja, converted by markdown-it (CommonMark;
    raw HTML allowed: templates are trusted author content) and put into the
    layout's content block. A ``{{ value }}`` in Markdown is always text: it is
    escaped for HTML and never read as Markdown, so a subscriber named
    ``[Click](https://evil.example)`` cannot add a link.

    The text part is ``<name>.txt`` from the body's folder (or a more specific
    locale folder, never a fallback one), rendered without autoescaping; else it
    is derived from the HTML. A standard footer is appended when it lacks the
    unsubscribe URL or the postal address.

Why values are rendered as placeholders
    Inlining CSS (css-inline), converting Markdown (markdown-it) and deriving
    text (inscriptis) cost about 40, 500 and 650 µs per email, far over the
    budget of ~100 µs. Their input depends on the subscriber only through
    expression values, so Jinja renders every ``{{ value }}`` as a token
    (``_finalize``) and records the value. That "structure" is converted once and
    cached; per email, the escaped values are spliced into the cached result.
    A new structure is first checked against a plain render (a filter applied
    to captured output, ``{% filter upper %}`` say, would alter the tokens) and
    is rendered plainly, per email, if the two disagree.

Templates run in an ImmutableSandboxedEnvironment (no calls to mutating
methods, so contexts can be shared) with ``StrictUndefined``. No clock, no
network; files are read only by the loader. Construct a new
:class:`TemplateLibrary` to pick up edited templates.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from base64 import b64encode
from collections.abc import Callable, Mapping
from collections.abc import Sequence as Seq
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import css_inline
from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig
from jinja2 import (
    BaseLoader,
    Environment,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    pass_context,
    select_autoescape,
)
from jinja2.exceptions import SecurityError
from jinja2.loaders import split_template_path
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from nurture.core.links import (
    Links,
    footer_problem,
    hrefs,
    link_problem,
    list_headers,
    offer_url,
    with_text_footer,
)
from nurture.core.model import Localized, Sequence, Step, localized
from nurture.core.subscriber import Subscriber
from nurture.errors import Diagnostic, RenderError

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

LAYOUT = "layout.html"

FOOTER_STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "unsubscribe": "Unsubscribe",
        "preferences": "Email preferences",
        "reason": "You receive this email because you signed up for it.",
    },
    "sv": {
        "unsubscribe": "Avregistrera dig",
        "preferences": "E-postinställningar",
        "reason": "Du får det här mejlet eftersom du har anmält dig till det.",
    },
}
"""Footer texts by language, given to templates as ``t`` (``{{ t.unsubscribe }}``)."""

KeyPath = tuple[str | int, ...]
Positions = Mapping[KeyPath, tuple[int, int]] | Callable[[KeyPath], tuple[int, int]]

# A subscriber's locale comes from a signup form: only a tag that looks like a
# locale may become a folder name, so "../../etc" never reaches the file system.
_LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
_SEP = "|"  # internal template name: "<folder>,<folder>,...,|<template name>"
_MARKDOWN_PAGE = "\x00markdown.html"  # NUL is never in a real file name
_MARKDOWN_VAR = "__nurture_markdown__"
_MARKDOWN_PAGE_SOURCE = (
    f'{{% extends "{LAYOUT}" %}}{{% block content %}}{{{{ {_MARKDOWN_VAR} }}}}{{% endblock %}}'
)
_SLOTS_VAR = "__nurture_slots__"
_INERT_VAR = "__nurture_markdown_text__"
# Lowercase letters and digits only: a token passes unchanged through Markdown
# (link targets too), HTML parsing (which lowercases names), CSS inlining and
# text extraction.
_SLOT_RE = re.compile(r"nurtslot(\d+)z")
_TOKENS = tuple(f"nurtslot{number}z" for number in range(256))
_CACHE_SIZE = 512
_TEXT_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_links=True)
_SAME_LINK = re.compile(r"\[([^\[\]\n]+)\]\(\1\)")
_BLANK_LINES = re.compile(r"\n{3,}")
_WHITESPACE = re.compile(r"\s+")
# Escapes a value for HTML and for Markdown at once (one pass, so no entity is
# escaped twice). CommonMark reads a numeric character reference as the literal
# character, never as syntax: "&#91;" shows "[" but cannot open a link.
_MARKDOWN_INERT = {ord(c): f"&#{ord(c)};" for c in "&<>\"'\\`*_[]()!#+-.=|~"} | {10: " ", 13: " "}
_V = TypeVar("_V")


# -- locales and template names ----------------------------------------------


@lru_cache(maxsize=1024)
def locale_search_path(locale: str | None, default_locale: str) -> tuple[str, ...]:
    """Folders to look in, most specific first; ``""`` (the root) is always last."""
    folders: list[str] = []
    for candidate in (locale, default_locale):
        tag = (candidate or "").replace("_", "-")
        if _LOCALE_RE.match(tag):
            for folder in (tag, tag.split("-")[0]):
                if folder not in folders:
                    folders.append(folder)
    return (*folders, "")


def _internal_name(folders: tuple[str, ...], template: str) -> str:
    return ",".join(folders) + _SEP + template


def _split_name(name: str) -> tuple[tuple[str, ...], str]:
    if _SEP not in name:
        return ("",), name
    folders, _, template = name.partition(_SEP)
    return tuple(folders.split(",")), template


class _LocaleLoader(BaseLoader):
    """Finds ``<folder>/<template>`` along the search path carried in the name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Every file handed to Jinja: traceback frames with these file names are
        # template code, which is how a runtime error finds its template:line.
        self.files: set[str] = set()

    def candidates(self, folders: tuple[str, ...], template: str) -> list[Path]:
        pieces = split_template_path(template)  # rejects "..": no way out of the root
        return [self.root.joinpath(folder, *pieces) for folder in folders]

    def resolve(self, folders: tuple[str, ...], template: str) -> Path | None:
        return next((p for p in self.candidates(folders, template) if p.is_file()), None)

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        folders, name = _split_name(template)
        if name == _MARKDOWN_PAGE:
            return _MARKDOWN_PAGE_SOURCE, "<markdown page>", None
        path = self.resolve(folders, name)
        if path is None:
            looked = ", ".join(str(p) for p in self.candidates(folders, name))
            raise TemplateNotFound(name, f"template {name!r} not found (looked in {looked})")
        self.files.add(str(path))
        return path.read_text(encoding="utf-8"), str(path), None

    def list_templates(self) -> list[str]:
        return sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
        )


class _Environment(ImmutableSandboxedEnvironment):
    def join_path(self, template: str, parent: str) -> str:
        # {% extends "layout.html" %} inherits the search path of the template
        # that names it, so the layout is looked up per locale like the body.
        return _internal_name(_split_name(parent)[0], template)


# -- placeholders: render once per structure, splice values per email --------


class _Slots:
    """The values of one render; equal values share one token."""

    __slots__ = ("index", "values")

    def __init__(self) -> None:
        self.values: list[str] = []
        self.index: dict[str, int] = {}

    def token(self, value: str) -> str:
        number = self.index.get(value)
        if number is None:
            number = self.index[value] = len(self.values)
            self.values.append(value)
        return _TOKENS[number] if number < len(_TOKENS) else f"nurtslot{number}z"


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    # pass_context also stops Jinja from calling this at compile time for
    # constants, so no token is ever baked into a compiled template.
    if hasattr(value, "__html__"):
        return value  # markup (macro output, blocks, |safe): part of the structure
    slots = context.parent.get(_SLOTS_VAR)
    if slots is not None:
        text = value if type(value) is str else str(value)  # UndefinedError raised here
        return slots.token(text) if text else text
    if context.parent.get(_INERT_VAR):  # a Markdown body rendered without tokens
        return Markup(str(value).translate(_MARKDOWN_INERT))
    return value


@dataclass(frozen=True)
class _Pieces:
    """A structure split at its tokens, for fast splicing of values."""

    literals: tuple[str, ...]
    slots: tuple[int, ...]

    @classmethod
    def of(cls, structure: str) -> _Pieces:
        parts = _SLOT_RE.split(structure)
        return cls(tuple(parts[0::2]), tuple(int(p) for p in parts[1::2]))

    def fill(self, values: Seq[str]) -> str:
        out = [self.literals[0]]
        count = len(values)
        for number, literal in zip(self.slots, self.literals[1:], strict=True):
            # A token-like text that came in as markup is left as it is.
            out.append(values[number] if number < count else f"nurtslot{number}z")
            out.append(literal)
        return "".join(out)


class _Page:
    """A cached, CSS-inlined structure; ``html`` is None when it must be rendered plainly."""

    __slots__ = ("_text", "html", "inlined")

    def __init__(self, inlined: str | None) -> None:
        self.inlined = inlined
        self.html = None if inlined is None else _Pieces.of(inlined)
        self._text: _Pieces | None = None

    def text(self) -> _Pieces:
        if self._text is None:  # derived on first use: a .txt sibling makes it unneeded
            assert self.inlined is not None
            self._text = _Pieces.of(html_to_text(self.inlined))
        return self._text


def _remember(cache: dict[str, _V], key: str, value: _V) -> _V:
    if len(cache) >= _CACHE_SIZE:  # evict the oldest: structures are few and stable
        with suppress(KeyError, RuntimeError, StopIteration):  # another thread got there
            del cache[next(iter(cache))]
    cache[key] = value
    return value


def _tokens(text: str) -> set[str]:
    return set(_SLOT_RE.findall(text))


def html_to_text(html: str) -> str:
    """A readable plain-text version of ``html``; links shown as ``[label](url)``."""
    text = get_text(html, _TEXT_CONFIG)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return _SAME_LINK.sub(r"\1", _BLANK_LINES.sub("\n\n", text)).strip("\n") + "\n"


# -- the template context ----------------------------------------------------


def footer_strings(locale: str, default_locale: str) -> dict[str, str]:
    """The footer texts in ``locale``'s language, else the sequence's, else English."""
    for tag in (locale, default_locale):
        strings = FOOTER_STRINGS.get(tag.replace("_", "-").split("-")[0].lower())
        if strings is not None:
            return strings
    return FOOTER_STRINGS["en"]


def template_context(
    sequence: Sequence,
    step: Step,
    subscriber: Subscriber,
    links: Links,
    postal_address: str,
    *,
    locale: str,
) -> dict[str, Any]:
    """The variables of every template of one email (body, text part, subject).

    ``step.subject`` and ``step.preheader`` are added once they are rendered.
    """
    offer = sequence.offer_step.offer
    if offer is None:
        raise RenderError(f"sequence {sequence.id!r} has no offer in its last step")
    sender = {
        "name": sequence.sender.name,
        "email": sequence.sender.email,
        "reply_to": sequence.sender.reply_to or sequence.sender.email,
    }
    return {
        "subscriber": subscriber.template_context(sequence.locale, sequence.timezone),
        "sequence": {
            "id": sequence.id,
            "name": sequence.name,
            "description": sequence.description or "",
            "locale": sequence.locale,
            "sender": sender,
        },
        "step": {"id": step.id, "template": step.template, "is_offer": step.offer is not None},
        "offer": {
            "name": localized(offer.name, locale, sequence.locale),
            "price": offer.price,
            "description": offer.description or "",
            "checkout_url": offer.checkout_url,
            "url": offer_url(offer.checkout_url, campaign=sequence.id, content=step.id),
        },
        "unsubscribe_url": links.unsubscribe_url,
        "preferences_url": links.preferences_url,
        "postal_address": postal_address,
        "sender": sender,
        "locale": locale,
        "t": footer_strings(locale, sequence.locale),
    }


# -- the result --------------------------------------------------------------


@dataclass(frozen=True)
class RenderedEmail:
    """One rendered email. ``headers`` are the pipeline's own (List-*, X-Nurture-*)."""

    subject: str
    preheader: str
    html: str
    text: str
    headers: dict[str, str]

    def to_message(
        self,
        *,
        sender_name: str,
        sender_email: str,
        to_email: str,
        to_name: str = "",
        reply_to: str | None = None,
        message_id: str,
        date: datetime,
    ) -> EmailMessage:
        """A multipart/alternative message (text, then HTML), UTF-8.

        ``message_id`` comes from the caller (derive it from the ledger row, so
        a resend of the same step is recognisable); ``date`` must be aware.
        :class:`~email.headerregistry.Address` RFC 2047-encodes non-ASCII display
        names such as "Anna på Exempel AB". Costs milliseconds (the email
        package); :meth:`to_bytes` gives the same message in a few per cent of that.
        """
        _check_date(date)
        message = EmailMessage()
        message["Subject"] = self.subject
        message["From"] = Address(display_name=sender_name, addr_spec=sender_email)
        message["To"] = Address(display_name=to_name, addr_spec=to_email)
        if reply_to:
            message["Reply-To"] = Address(addr_spec=reply_to)
        message["Date"] = format_datetime(date)
        message["Message-ID"] = _angle(message_id)
        for name, value in self.headers.items():
            message[name] = value
        # Text first: RFC 2046 section 5.1.4 orders alternatives from the least
        # to the most faithful, and clients show the last one they can.
        message.set_content(self.text, charset="utf-8")
        message.add_alternative(self.html, subtype="html", charset="utf-8")
        return message

    def to_bytes(
        self,
        *,
        sender_name: str,
        sender_email: str,
        to_email: str,
        to_name: str = "",
        reply_to: str | None = None,
        message_id: str,
        date: datetime,
    ) -> bytes:
        """The message of :meth:`to_message` as RFC 5322 bytes with CRLF line ends.

        Deterministic: the MIME boundary comes from the Message-ID and starts
        with ``=_``, which quoted-printable bodies can never contain.
        """
        _check_date(date)
        headers = [
            ("Subject", _encode_text(self.subject)),
            ("From", _encode_address(sender_name, sender_email)),
            ("To", _encode_address(to_name, to_email)),
        ]
        if reply_to:
            headers.append(("Reply-To", _encode_address("", reply_to)))
        headers += [("Date", format_datetime(date)), ("Message-ID", _angle(message_id))]
        # Ours are ASCII already, with encoded words where needed (links.list_id).
        headers += [
            (name, " ".join(value.split()) if value.isascii() else _encode_text(value))
            for name, value in self.headers.items()
        ]
        boundary = "=_" + hashlib.sha256(message_id.encode()).hexdigest()[:24]
        headers += [
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ]
        out = [f"{name}: {value}\r\n" for name, value in headers]
        for subtype, body in (("plain", self.text), ("html", self.html)):
            out.append(
                f'\r\n--{boundary}\r\nContent-Type: text/{subtype}; charset="utf-8"\r\n'
                f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{_quoted_printable(body)}"
            )
        out.append(f"\r\n--{boundary}--\r\n")
        return "".join(out).encode("ascii")


def _check_date(date: datetime) -> None:
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValueError("date must be timezone-aware")


def _angle(message_id: str) -> str:
    return message_id if message_id.startswith("<") else f"<{message_id}>"


def _encode_text(value: str) -> str:
    """A header value: as is when short ASCII, else RFC 2047 encoded words.

    Newlines are folded to spaces first, so no value can inject a header.
    """
    value = " ".join(value.split())
    if value.isascii() and len(value) <= 900 and "=?" not in value:  # RFC 5322 2.1.1
        return value
    data, words, start = value.encode(), [], 0
    while start < len(data):
        end = min(start + 45, len(data))  # 45 bytes: words under 75 characters (RFC 2047 2)
        while end < len(data) and data[end] & 0xC0 == 0x80:  # not inside a character
            end -= 1
        words.append(f"=?utf-8?b?{b64encode(data[start:end]).decode()}?=")
        start = end
    return "\r\n ".join(words)


_SPECIALS = frozenset('()<>@,;:\\".[]')
_NOT_IN_ADDRESS = re.compile(r"[\s<>]")


def _encode_address(name: str, address: str) -> str:
    local, _, domain = address.rpartition("@")
    if not local or not local.isascii() or _NOT_IN_ADDRESS.search(address):
        raise ValueError(f"cannot put address {address!r} in a header")
    address = f"{local}@{domain.encode('idna').decode('ascii')}"
    name = " ".join(name.split())
    if not name:
        return address
    if not name.isascii():
        return f"{_encode_text(name)} <{address}>"
    if any(c in _SPECIALS for c in name):
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address}>'
    return f"{name} <{address}>"


def _quoted_printable(text: str) -> str:
    """``text`` ending in a line break, quoted-printable with CRLF line ends.

    binascii's encoder is C; with ``istext`` it keeps line breaks and soft-wraps
    at 76 characters (RFC 2045 6.7).
    """
    data = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n") + "\n"
    return binascii.b2a_qp(data.encode("utf-8"), istext=True).decode("ascii").replace("\n", "\r\n")


# -- rendering ---------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Where one body template's files are, for one pair of locales."""

    folders: tuple[str, ...]
    locale: str
    source: str  # the body template's file, as a path under templates_dir
    body: str  # internal names (see _internal_name) from here on
    page: str  # the layout page a Markdown body is put into
    text: str | None  # the .txt sibling, when there is one
    markdown: bool


class _RenderFailure(RenderError):
    """A RenderError that knows where: a template line, or a key of the sequence file."""

    def __init__(self, diagnostic: Diagnostic, key: KeyPath | None = None) -> None:
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic
        self.key = key


def _describe(exc: BaseException) -> str:
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


def _text_key(value: Localized, locale: str, default_locale: str) -> KeyPath:
    """The key path below a step's field of the text ``localized`` picks."""
    if isinstance(value, str):
        return ()
    chosen = localized(value, locale, default_locale)
    return next((key,) for key, text in value.items() if text is chosen)


class TemplateLibrary:
    """The templates under ``templates_dir``, compiled and cached.

    Safe to share between threads (a race only repeats work).
    """

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = Path(templates_dir)
        self._loader = _LocaleLoader(self.templates_dir)
        self._env = _Environment(
            loader=self._loader,
            undefined=StrictUndefined,
            # .md too: values are escaped before markdown-it sees them. Subjects
            # (from_string) are plain-text headers: not escaped.
            autoescape=select_autoescape(["html", "htm", "md"], default_for_string=False),
            finalize=_finalize,
            auto_reload=False,
        )
        self._markdown = MarkdownIt("commonmark", {"html": True})
        # Never fetch a stylesheet: rendering must not touch the network.
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)
        self._globals = dict(self._env.globals)  # range, dict, namespace...: see _run
        self._templates: dict[str, Template] = {}
        self._lines: dict[str, Template] = {}
        self._plans: dict[str, _Plan] = {}
        self._markdown_pages: dict[str, str | None] = {}
        self._pages: dict[str, _Page] = {}

    def render(
        self,
        sequence: Sequence,
        step: Step,
        subscriber: Subscriber,
        links: Links,
        postal_address: str,
    ) -> RenderedEmail:
        """Render ``step`` for ``subscriber``; a RenderError names template:line."""
        return self._render_email(sequence, step, subscriber, links, postal_address)[0]

    def find(self, template: str, locale: str | None, default_locale: str) -> Path | None:
        """The file ``template`` resolves to for a subscriber's locale, or None."""
        try:
            return Path(self._plan(template, locale, default_locale).source)
        except RenderError:
            return None

    def locales_for(self, sequence: Sequence) -> list[str]:
        """The sequence's locale, then every locale folder holding one of its templates."""
        names = {step.template for step in sequence.steps}
        found = set()
        for name in self._loader.list_templates():
            folder, _, rest = name.partition("/")
            if rest in names and _LOCALE_RE.match(folder):
                found.add(folder)
        return [sequence.locale, *sorted(found - {sequence.locale})]

    def _render_email(
        self,
        sequence: Sequence,
        step: Step,
        subscriber: Subscriber,
        links: Links,
        postal_address: str,
        *,
        check_footer: bool = True,
    ) -> tuple[RenderedEmail, _Plan]:
        try:
            plan = self._plan(step.template, subscriber.locale, sequence.locale)
        except _RenderFailure as failure:
            raise _RenderFailure(
                failure.diagnostic, ("steps", _index(sequence, step), "template")
            ) from None
        context = {
            **self._globals,
            **template_context(
                sequence, step, subscriber, links, postal_address, locale=plan.locale
            ),
        }
        lines = {"subject": "", "preheader": ""}
        for field in lines:
            value: Localized | None = getattr(step, field)
            if value is None:
                continue
            try:
                lines[field] = self._render_line(
                    localized(value, plan.locale, sequence.locale), context
                )
            except Exception as exc:  # in the sequence file: name the key, not a template
                text_key = _text_key(value, plan.locale, sequence.locale)
                key = ("steps", _index(sequence, step), field, *text_key)
                message = f"{field} of step {step.id!r}: {_describe(exc)}"
                where = Diagnostic(f"<sequence {sequence.id}>", 1, 1, message)
                raise _RenderFailure(where, key) from exc
        context["step"] = {**context["step"], **lines}
        html, derive_text = self._render_html(plan, context)
        text = self._render(plan, plan.text, context) if plan.text else derive_text()
        text = with_text_footer(text, links, postal_address, context["t"]["unsubscribe"])
        problem = footer_problem(html, links, postal_address) if check_footer else None
        if problem:
            raise _RenderFailure(Diagnostic(plan.source, 1, 1, problem))
        headers = list_headers(
            links,
            sequence_id=sequence.id,
            sequence_name=sequence.name,
            sender_email=sequence.sender.email,
            step_id=step.id,
        )
        email = RenderedEmail(lines["subject"], lines["preheader"], html, text, headers)
        return email, plan

    def _render_html(self, plan: _Plan, context: dict[str, Any]) -> tuple[str, Callable[[], str]]:
        """The final HTML, and a way to derive the text part from it."""
        slots = _Slots()
        scope = {**context, _SLOTS_VAR: slots}
        markdown_html: str | None = None
        if plan.markdown:
            source = self._render(plan, plan.body, scope)
            markdown_html = self._markdown_page(plan, source, slots, context)
            if markdown_html is None:
                return self._render_plain(plan, context)
            scope[_MARKDOWN_VAR] = Markup(markdown_html)
        structure = self._render(plan, plan.page if plan.markdown else plan.body, scope)
        page = self._pages.get(structure)
        if page is None:
            page = self._new_page(plan, structure, slots, context, markdown_html)
            _remember(self._pages, structure, page)
        if page.html is None:
            return self._render_plain(plan, context)
        values = slots.values
        html = page.html.fill([escape(value) for value in values])
        return html, lambda: page.text().fill(
            # In text, as in HTML, a line break in a value shows as a space.
            [v if v.isprintable() else _WHITESPACE.sub(" ", v) for v in values]
        )

    def _markdown_page(
        self, plan: _Plan, source: str, slots: _Slots, context: dict[str, Any]
    ) -> str | None:
        """The Markdown structure as HTML (cached); None when it cannot be reused."""
        if source in self._markdown_pages:
            return self._markdown_pages[source]
        html: str | None = self._markdown.render(source)
        plain = self._render(plan, plan.body, context)
        escaped = [escape(value) for value in slots.values]
        if plain != _Pieces.of(source).fill(escaped) or not _tokens(source) <= _tokens(html or ""):
            html = None
        return _remember(self._markdown_pages, source, html)

    def _new_page(
        self,
        plan: _Plan,
        structure: str,
        slots: _Slots,
        context: dict[str, Any],
        markdown_html: str | None,
    ) -> _Page:
        # Once per structure: splicing the values in must give exactly what a
        # plain render gives, and inlining must keep every token.
        escaped = [escape(value) for value in slots.values]
        scope = dict(context)
        if markdown_html is not None:
            scope[_MARKDOWN_VAR] = Markup(_Pieces.of(markdown_html).fill(escaped))
        plain = self._render(plan, plan.page if plan.markdown else plan.body, scope)
        if plain != _Pieces.of(structure).fill(escaped):
            return _Page(None)
        inlined = self._inline(plan, structure)
        return _Page(inlined if _tokens(structure) <= _tokens(inlined) else None)

    def _render_plain(self, plan: _Plan, context: dict[str, Any]) -> tuple[str, Callable[[], str]]:
        """Everything per email, for a structure the cache cannot serve."""
        if plan.markdown:
            source = self._render(plan, plan.body, {**context, _INERT_VAR: True})
            scope = {**context, _MARKDOWN_VAR: Markup(self._markdown.render(source))}
            html = self._inline(plan, self._render(plan, plan.page, scope))
        else:
            html = self._inline(plan, self._render(plan, plan.body, context))
        return html, lambda: html_to_text(html)

    def _inline(self, plan: _Plan, html: str) -> str:
        try:
            return self._inliner.inline(html)
        except ValueError as exc:  # css_inline.InlineError
            raise _RenderFailure(
                Diagnostic(plan.source, 1, 1, f"cannot inline CSS: {exc}")
            ) from exc

    def _plan(self, template: str, locale: str | None, default_locale: str) -> _Plan:
        key = f"{template}{_SEP}{locale}{_SEP}{default_locale}"
        plan = self._plans.get(key)
        if plan is None:
            plan = _remember(self._plans, key, self._new_plan(template, locale, default_locale))
        return plan

    def _new_plan(self, template: str, locale: str | None, default_locale: str) -> _Plan:
        folders = locale_search_path(locale, default_locale)
        try:
            candidates = self._loader.candidates(folders, template)
        except TemplateNotFound:
            candidates = []
        found = next((i for i, path in enumerate(candidates) if path.is_file()), None)
        if found is None:
            looked = ", ".join(str(path) for path in candidates)
            message = f"template {template!r} not found (looked in {looked})"
            raise _RenderFailure(Diagnostic(template, 1, 1, message))
        own = locale_search_path(locale, "")[:-1]  # the subscriber's folders
        text_name = template.rsplit(".", 1)[0] + ".txt"
        # The text part must be in the body's language: a .txt counts in the
        # body's folder or a more specific one, never in a fallback folder.
        has_text = self._loader.resolve(folders[: found + 1], text_name) is not None
        return _Plan(
            folders=folders,
            locale=own[0] if folders[found] in own else default_locale,
            source=str(candidates[found]),
            body=_internal_name(folders, template),
            page=_internal_name(folders, _MARKDOWN_PAGE),
            text=_internal_name(folders, text_name) if has_text else None,
            markdown=template.endswith(".md"),
        )

    def _render(self, plan: _Plan, name: str, scope: dict[str, Any]) -> str:
        try:
            template = self._templates.get(name)
            if template is None:
                template = _remember(self._templates, name, self._env.get_template(name))
            return self._run(template, scope)
        except Exception as exc:  # the boundary: whatever a template raised
            raise _RenderFailure(self._diagnose(exc, plan.source)) from exc

    def _run(self, template: Template, scope: dict[str, Any]) -> str:
        # Template.render copies the variables and merges in the globals (a
        # ChainMap) on every call, ~10 µs each of the 3-4 renders of an email.
        # The scope already holds the globals, so the context shares it; Jinja
        # never writes to a context's parent.
        try:
            return "".join(template.root_render_func(template.new_context(scope, shared=True)))
        except Exception:
            self._env.handle_exception()  # re-raises with template file:line frames

    def _render_line(self, source: str, context: dict[str, Any]) -> str:
        """A subject or preheader: plain text, newlines folded (no header injection)."""
        if "{" not in source:  # no Jinja syntax: the text is its own rendering
            return " ".join(source.split())
        template = self._lines.get(source)
        if template is None:
            template = _remember(self._lines, source, self._env.from_string(source))
        return " ".join(self._run(template, context).split())

    def _diagnose(self, exc: BaseException, fallback: str) -> Diagnostic:
        if isinstance(exc, TemplateSyntaxError):
            return Diagnostic(exc.filename or fallback, exc.lineno or 1, 1, _describe(exc))
        # Jinja rewrites tracebacks so template frames carry the template's file
        # name and line; the innermost one is where the error is.
        file, line = fallback, 1
        frame = exc.__traceback__
        while frame is not None:
            if frame.tb_frame.f_code.co_filename in self._loader.files:
                file, line = frame.tb_frame.f_code.co_filename, frame.tb_lineno
            frame = frame.tb_next
        return Diagnostic(file, line, 1, _describe(exc))

    def _locate(self, plan: _Plan, needles: tuple[str, ...]) -> tuple[str, int]:
        """The file and line where one of ``needles`` is written (body, then layout)."""
        for name in (plan.body, _internal_name(plan.folders, LAYOUT)):
            try:
                source, filename, _ = self._loader.get_source(self._env, name)
            except TemplateNotFound:
                continue
            for number, line in enumerate(source.splitlines(), start=1):
                if any(needle in line for needle in needles):
                    return filename or plan.source, number
        return plan.source, 1


def render_step(
    library: TemplateLibrary,
    sequence: Sequence,
    step: Step,
    subscriber: Subscriber,
    links: Links,
    postal_address: str,
) -> RenderedEmail:
    """Render one email; the locale is the subscriber's, else the sequence's."""
    return library.render(sequence, step, subscriber, links, postal_address)


# -- validation --------------------------------------------------------------


def validate_rendering(
    library: TemplateLibrary,
    sequence: Sequence,
    subscribers: list[Subscriber],
    links: Links,
    postal_address: str,
    sequence_file: str,
    *,
    positions: Positions | None = None,
) -> list[Diagnostic]:
    """Render every step for every sample subscriber in every locale; list the problems.

    ``positions`` maps a key path such as ``("steps", 2, "template")`` to its
    (line, column) in ``sequence_file``; ``LoadedSequence.positions.of`` fits.
    Without samples, one made-up subscriber is used.
    """

    def at(key: KeyPath) -> tuple[int, int]:
        if positions is None:
            return 1, 1
        if isinstance(positions, Mapping):  # the deepest key it knows
            for end in range(len(key), 0, -1):
                if key[:end] in positions:
                    return positions[key[:end]]
            return 1, 1
        return positions(key)

    found: dict[Diagnostic, None] = {}  # ordered, without repeats
    samples = subscribers or [Subscriber(email="sample@example.com", name="Sam Sample")]
    locales = library.locales_for(sequence)
    for index, step in enumerate(sequence.steps):
        try:
            library._plan(step.template, None, sequence.locale)
        except _RenderFailure as failure:
            key = ("steps", index, "template")
            found[Diagnostic(sequence_file, *at(key), failure.diagnostic.message)] = None
            continue
        offer_link = None
        if step.offer is not None:
            offer_link = offer_url(step.offer.checkout_url, campaign=sequence.id, content=step.id)
        for locale in locales:
            for sample in samples:
                try:
                    email, plan = library._render_email(
                        sequence,
                        step,
                        replace(sample, locale=locale),
                        links,
                        postal_address,
                        check_footer=False,
                    )
                except _RenderFailure as failure:
                    problem = failure.diagnostic
                    if failure.key is not None:
                        problem = Diagnostic(sequence_file, *at(failure.key), problem.message)
                    found[problem] = None
                    continue
                for problem in _email_problems(
                    library, plan, email, links, postal_address, offer_link
                ):
                    found[problem] = None
    return list(found)


def _email_problems(
    library: TemplateLibrary,
    plan: _Plan,
    email: RenderedEmail,
    links: Links,
    postal_address: str,
    offer_link: str | None,
) -> list[Diagnostic]:
    problems: list[Diagnostic] = []
    missing = footer_problem(email.html, links, postal_address)
    if missing:
        problems.append(Diagnostic(plan.source, 1, 1, missing))
    targets = hrefs(email.html)
    for href in targets:
        problem = link_problem(href, links)
        if problem:
            file, line = library._locate(plan, (href, str(escape(href))))
            problems.append(Diagnostic(file, line, 1, problem))
    if offer_link is not None and offer_link not in targets:
        message = (
            "the offer email does not link to the offer: link to {{ offer.url }} "
            "(the checkout address with tracking added)"
        )
        problems.append(Diagnostic(plan.source, 1, 1, message))
    return problems
