"""Rendering values as placeholders: convert a structure once, splice values per email.

Inlining CSS (css-inline), converting Markdown (markdown-it) and deriving text
(inscriptis) cost about 40, 500 and 650 µs per email, far over the budget of
~100 µs. Their input depends on the subscriber only through expression values,
so Jinja renders every ``{{ value }}`` as a token (``finalize``) and records
the value. That "structure" is converted once and cached; per email, the
escaped values are spliced into the cached result. A new structure is first
checked against a plain render (a filter applied to captured output,
``{% filter upper %}`` say, would alter the tokens) and is rendered plainly,
per email, if the two disagree: :class:`~nurture.core.rendering.templates.TemplateLibrary`
makes that check.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from collections.abc import Sequence as Seq
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig
from inscriptis.model.html_document_state import HtmlDocumentState
from inscriptis.model.tag import CustomHtmlTagHandlerMapping
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup

from nurture.core.budget import CURRENT_BUDGET
from nurture.core.rendering.message import NotUnicode, unicode_problem
from nurture.core.sandbox import SIZED, printed_size

SLOTS_VAR = "__nurture_slots__"
INERT_VAR = "__nurture_markdown_text__"
EMPTY_VAR = "__nurture_mark_empty__"
EMPTY_MARK = "\ue000"
"""With ``EMPTY_VAR`` set, a ``{{ value }}`` that renders empty shows as this
private-use character instead, so validation can see where a subscriber
without a name would read ``Hi ,`` (never set when sending)."""
# Lowercase letters and digits only: a token passes unchanged through Markdown
# (link targets too), HTML parsing (which lowercases names), CSS inlining and
# text extraction.
_SLOT_RE = re.compile(r"nurtslot(\d+)z")
_TOKENS = tuple(f"nurtslot{number}z" for number in range(256))
_CACHE_SIZE = 512
_BLANK_LINES = re.compile(r"\n{3,}")
# Escapes a value for HTML and for Markdown at once (one pass, so no entity is
# escaped twice). CommonMark reads a numeric character reference as the literal
# character, never as syntax: "&#91;" shows "[" but cannot open a link.
_MARKDOWN_INERT = {ord(c): f"&#{ord(c)};" for c in "&<>\"'\\`*_[]()!#+-.=|~"} | {10: " ", 13: " "}
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class Slots:
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
def finalize(context: Context, value: Any) -> Any:
    """Jinja's ``finalize`` hook: a value becomes a token while slots are collected."""
    # pass_context also stops Jinja from calling this at compile time for
    # constants, so no token is ever baked into a compiled template.
    budget = CURRENT_BUDGET.get()
    if budget is not None:  # every {{ value }} counts towards the render's output budget
        if type(value) is str:  # most values: no call
            budget.produced += len(value)
        else:
            budget.produced += printed_size(value) if isinstance(value, SIZED) else 1
        if budget.produced > budget.limits.output:
            budget.produce(0)  # raises BudgetExceeded
    if hasattr(value, "__html__"):
        return value  # markup (macro output, blocks, |safe): part of the structure
    if isinstance(value, str) and not value.isascii():
        # Refused here, inside the template, so the failure names its line;
        # the email's parts are checked again whole (templates.py).
        try:
            value.encode("utf-8")  # strict: only a lone surrogate fails (one call, no scan)
        except UnicodeEncodeError:
            raise NotUnicode(unicode_problem(value) or "not valid Unicode") from None
    slots = context.parent.get(SLOTS_VAR)
    if slots is not None:
        text = value if type(value) is str else str(value)  # UndefinedError raised here
        return slots.token(text) if text else text
    if context.parent.get(INERT_VAR):  # a Markdown body rendered without tokens
        return Markup(str(value).translate(_MARKDOWN_INERT))
    if context.parent.get(EMPTY_VAR) and str(value) == "":
        return EMPTY_MARK
    return value


finalize.counts_output = True  # type: ignore[attr-defined]  # see BudgetedSandbox


@dataclass(frozen=True)
class Pieces:
    """A structure split at its tokens, for fast splicing of values."""

    literals: tuple[str, ...]
    slots: tuple[int, ...]

    @classmethod
    def of(cls, structure: str) -> Pieces:
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


class CachedPage:
    """A cached, CSS-inlined structure; ``html`` is None when it must be rendered plainly."""

    __slots__ = ("_text", "html", "inlined")

    def __init__(self, inlined: str | None) -> None:
        self.inlined = inlined
        self.html = None if inlined is None else Pieces.of(inlined)
        self._text: Pieces | None = None

    def text(self) -> Pieces:
        if self._text is None:  # derived on first use: a .txt sibling makes it unneeded
            assert self.inlined is not None
            self._text = Pieces.of(html_to_text(self.inlined))
        return self._text


def remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    """Store ``value`` under ``key`` in a bounded cache; return ``value``."""
    if len(cache) >= _CACHE_SIZE:  # evict the oldest: structures are few and stable
        with suppress(KeyError, RuntimeError, StopIteration):  # another thread got there
            del cache[next(iter(cache))]
    cache[key] = value
    return value


def tokens_in(text: str) -> set[str]:
    """The placeholder numbers in ``text`` (a conversion must keep every one)."""
    return set(_SLOT_RE.findall(text))


def html_to_text(html: str) -> str:
    """A readable plain-text version of ``html``: a link reads ``label (URL)``,
    or just the URL when that is its label (see :func:`_link_text`)."""
    # inscriptis unescapes text the HTML parser has already decoded, so an
    # escaped "&amp;lt" (a subscriber named "&lt") would come out as "<". Every
    # "&amp;" travels through it as a character the input does not contain.
    # Three more such characters mark where each link's label starts and ends
    # and its target ends: only real <a> elements get them, so text that merely
    # looks like a Markdown link (a subscriber's name, say) stays as it is.
    free = (chr(c) for c in range(0xE001, 0xF900) if chr(c) not in html)
    stand_in, opened, closed, ended = next(free), next(free), next(free), next(free)
    config = ParserConfig(
        css=CSS_PROFILES["strict"],
        custom_html_tag_handler_mapping=_link_markers(opened, closed, ended),
    )
    text = get_text(html.replace("&amp;", stand_in), config)
    text = _replace_links(text, opened, closed, ended).replace(stand_in, "&")
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", text).strip("\n") + "\n"


def _link_markers(opened: str, closed: str, ended: str) -> CustomHtmlTagHandlerMapping:
    """inscriptis handlers that wrap each ``<a href>`` as opened label closed URL ended."""

    def start(state: HtmlDocumentState, attrs: dict[str, str]) -> None:
        state.link_target = attrs.get("href", "").strip()
        if state.link_target:
            state.tags[-1].write(opened)

    def end(state: HtmlDocumentState) -> None:
        if state.link_target:
            state.tags[-1].write(f"{closed}{state.link_target}{ended}")
            state.link_target = ""

    return CustomHtmlTagHandlerMapping({"a": start}, {"a": end})


def _replace_links(text: str, opened: str, closed: str, ended: str) -> str:
    """Each marked link in ``text`` as :func:`_link_text` writes it, with the
    spaces just around it folded in.

    A loop rather than one ``re.sub`` with ``( *)`` on either side: inscriptis
    pads the lines of a table to its widest line, and a pattern starting with
    ``( *)`` tries every space of such a run as a start, which is quadratic in
    the run (a long paragraph in the layout's table took minutes, inside one C
    call that no render budget can stop). Here each character is looked at a
    bounded number of times.
    """
    links = re.compile(f"{opened}(.*?){closed}(.*?){ended}", re.S)
    pieces: list[str] = []
    done = 0  # text[:done] is written (the spaces after a link belong to it)
    for found in links.finditer(text):
        start, end = found.start(), found.end()
        before = start
        while before > done and text[before - 1] == " ":
            before -= 1
        after = end
        while after < len(text) and text[after] == " ":
            after += 1
        at_line_start = before == 0 or text[before - 1] == "\n"
        pieces.append(text[done:before])
        pieces.append(
            _link_text(
                found.group(1), found.group(2),
                spaced_before=before < start, spaced_after=after > end,
                at_line_start=at_line_start,
            )
        )  # fmt: skip
        done = after
    pieces.append(text[done:])
    return "".join(pieces)


def _link_text(
    label: str, href: str, *, spaced_before: bool, spaced_after: bool, at_line_start: bool
) -> str:
    """How one link reads in a text part: ``Read more (https://...)``; the bare
    URL when the label is empty or the URL itself; the label alone for a jump
    inside the email (``#top``). A ``mailto:`` shows as the address. Spaces
    just inside or around the link fold into one, as they would in HTML."""
    words = " ".join(label.split()) if "\n" not in label.strip() else label.strip()
    shown = href.removeprefix("mailto:") if "?" not in href else href
    if href.startswith("#"):
        link = words
    elif not words or words in (href, shown):
        link = shown
    else:
        link = f"{words} ({shown})"
    lead = " " if (spaced_before or label[:1] == " ") and not at_line_start else ""
    trail = " " if spaced_after or label[-1:] == " " else ""
    return f"{lead}{link}{trail}"
