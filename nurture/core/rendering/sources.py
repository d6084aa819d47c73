"""Where a link or the footer is written in a template's source, so ``nurture
validate`` can say ``file:line:column``.

A rendered email has lost its source positions, so a bad ``href`` is looked
for again in the files it was rendered from, but only where a link can be
written: the ``href`` of an ``<a>`` or ``<area>`` tag, and in Markdown an
inline link ``[text](target)``, an autolink ``<https://...>`` or a reference
definition ``[name]: target``. The same characters as plain text (``#`` in a
``## heading``, a CSS colour, an address in a sentence) are not a link. Jinja
comments never count; HTML comments count only when asked for (a link in one
is not in the email, but may be the unsubscribe link someone commented out).

Pure functions of strings: :mod:`nurture.core.rendering.compiled` reads the
files.
"""

from __future__ import annotations

import html as html_lib
import re
from bisect import bisect_right
from dataclasses import dataclass
from urllib.parse import unquote

_JINJA = re.compile(r"{{.*?}}|{%.*?%}", re.S)  # in a target: a few characters
_OPENERS = re.compile(r"{[{%#]|<!--")
_CLOSERS = {"{{": "}}", "{%": "%}", "{#": "#}", "<!--": "-->"}
_MASK = "\x00"  # stands for Jinja code, which may hold quotes, spaces and ">"

# Inside a tag no "<" and no unquoted ">"; a quoted value holds neither: each
# match stops at the next angle bracket, so no source makes a search slow.
_TAG_HREF = re.compile(
    r"""<(?:a|area)(?=[\s/>])(?:[^<>"']|"[^<>"]*"|'[^<>']*')*?(?<![\w-])href\s*=\s*"""
    r"""(?:"(?P<double>[^<>"]*)"|'(?P<single>[^<>']*)'|(?P<bare>[^\s"'<>]+))""",
    re.I,
)
_INLINE = re.compile(
    r"\]\([ \t]*(?:\n[ \t]*)?"
    r"(?:<(?P<angle>[^<>\n]*)>|(?P<plain>(?:[^\s()\\]|\\.|\((?:[^\s()\\]|\\.)*\))*))"
)
_AUTOLINK = re.compile(r"<(?P<target>[A-Za-z][A-Za-z0-9+.\-]{1,31}:[^\s<>]*)>")
_DEFINITION = re.compile(
    r"^ {0,3}\[(?:[^\]\\\n]|\\.)+\]:[ \t]*(?:\n[ \t]*)?(?:<(?P<angle>[^<>\n]*)>|(?P<plain>\S+))",
    re.M,
)
_BACKSLASH = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark's escapable punctuation
_FOOTER = re.compile(
    r"""<footer\b|<[A-Za-z][\w-]*\b(?:[^<>"']|"[^<>"]*"|'[^<>']*')*?(?<![\w-])class\s*=\s*"""
    r"""(?:"[^<>"]*\bfooter\b[^<>"]*"|'[^<>']*\bfooter\b[^<>']*'|footer\b)""",
    re.I,
)


@dataclass(frozen=True)
class LinkSite:
    """One link as written: where it starts and its target, Jinja included."""

    line: int
    column: int
    target: str
    markdown: bool
    """Written in Markdown syntax (its target unescaped and percent-encoded as
    markdown-it does), not as an HTML attribute."""

    @property
    def literal(self) -> bool:
        """Whether the target is written out (no ``{{ value }}`` in it)."""
        return _JINJA.search(self.target) is None

    def written(self) -> str:
        """The target as a reader's mail client gets it, when it is written out."""
        return self._unescape(self.target.strip())

    def score(self, href: str) -> int | None:
        """How well this link accounts for the rendered ``href``: None when it
        cannot have made it, else the number of characters written out that
        match (a link built from values matches what its written parts allow)."""
        target = self.target.strip()
        pieces = _JINJA.split(target)
        if len(pieces) == 1:
            written = self.written()
            same = written == href or unquote(written) == unquote(href)
            return len(written) if same else None
        texts = [self._unescape(piece) for piece in pieces]
        if _fits(texts, href) or _fits(texts, unquote(href)):
            return sum(len(text) for text in texts)
        return None

    def _unescape(self, text: str) -> str:
        if self.markdown:
            text = _BACKSLASH.sub(r"\1", text)
        return html_lib.unescape(text)


def link_sites(source: str, *, markdown: bool, comments: bool = False) -> list[LinkSite]:
    """Every link written in ``source`` (a template), in the order written.

    ``markdown`` reads Markdown's link syntax too; ``comments`` includes the
    links inside HTML comments.
    """
    masked = _masked(source, comments=comments)
    found: list[tuple[int, str, bool]] = []  # (offset of its start, target, markdown)
    for match in _TAG_HREF.finditer(masked):
        group = next(name for name in ("double", "single", "bare") if match.group(name) is not None)
        found.append((match.start(), source[match.start(group) : match.end(group)], False))
    if markdown:
        openings = _bracket_pairs(masked)
        for match in _INLINE.finditer(masked):
            start = openings.get(match.start())
            if start is None or (start > 0 and masked[start - 1] == "!"):
                continue  # not a link, or an image
            group = "angle" if match.group("angle") is not None else "plain"
            found.append((start, source[match.start(group) : match.end(group)], True))
        for match in _AUTOLINK.finditer(masked):
            target = source[match.start("target") : match.end("target")]
            found.append((match.start(), target, True))
        for match in _DEFINITION.finditer(masked):
            group = "angle" if match.group("angle") is not None else "plain"
            start = match.start() + len(match.group()) - len(match.group().lstrip(" "))
            found.append((start, source[match.start(group) : match.end(group)], True))
    where = _Lines(source)
    return [
        LinkSite(*where.of(offset), target, in_markdown)
        for offset, target, in_markdown in sorted(found, key=lambda item: item[0])
    ]


Place = tuple[str, int, int]  # file, line, column
_MOST_BUILT = 200  # links built from values tried for one href, in a file set


class LinkIndex:
    """The links written in the files of one email, looked up by target."""

    def __init__(self, files: list[tuple[str, list[LinkSite]]]) -> None:
        self._written: dict[str, list[Place]] = {}
        self._built: list[tuple[LinkSite, Place]] = []
        for file, sites in files:
            for site in sites:
                place = (file, site.line, site.column)
                if site.literal:
                    target = site.written()
                    for key in dict.fromkeys((target, unquote(target))):
                        self._written.setdefault(key, []).append(place)
                elif len(self._built) < _MOST_BUILT:
                    self._built.append((site, place))

    def places(self, href: str) -> list[Place]:
        """Every link written out with ``href`` as its target; else the one
        link built from values that fits it best; else none."""
        found = [*self._written.get(href, ()), *self._written.get(unquote(href), ())]
        if found:
            return list(dict.fromkeys(found))
        best: Place | None = None
        best_score = -1
        for site, place in self._built:
            score = site.score(href)
            if score is not None and score > best_score:
                best, best_score = place, score
        return [] if best is None else [best]


def mention(source: str, needle: str) -> tuple[int, int] | None:
    """(line, column) of the link whose target names ``needle`` (a template
    variable such as ``unsubscribe_url``), HTML comments included; else where
    ``needle`` is first written outside a Jinja comment; None when it is not."""
    for site in link_sites(source, markdown=False, comments=True):
        if needle in site.target:
            return site.line, site.column
    index = _masked(source, comments=True, code=False).find(needle)
    return None if index < 0 else _Lines(source).of(index)


def footer_position(source: str) -> tuple[int, int] | None:
    """(line, column) of a layout's footer: a ``<footer>`` element, or one whose
    ``class`` names ``footer``; else None."""
    match = _FOOTER.search(_masked(source, comments=False))
    return None if match is None else _Lines(source).of(match.start())


def _masked(source: str, *, comments: bool, code: bool = True) -> str:
    """``source`` with Jinja comments (and HTML comments unless ``comments``)
    blanked, and Jinja code masked unless not ``code``: same length, same
    lines. One pass: a delimiter never closed runs to the end, as Jinja and
    browsers read it."""
    pieces: list[str] = []
    done = 0
    while (found := _OPENERS.search(source, done)) is not None:
        opener = found.group()
        if opener == "<!--" and comments:  # kept, and what is inside it read too
            pieces.append(source[done : found.end()])
            done = found.end()
            continue
        end = source.find(_CLOSERS[opener], found.end())
        end = len(source) if end < 0 else end + len(_CLOSERS[opener])
        if opener == "<!--" and source.startswith(("<!-->", "<!--->"), found.start()):
            end = source.index(">", found.start()) + 1  # ends where it starts, as in a browser
        text = source[found.start() : end]
        if opener in ("{#", "<!--"):
            text = _blank(text)
        elif code:
            text = _blank(text, _MASK)
        pieces.append(source[done : found.start()] + text)
        done = end
    pieces.append(source[done:])
    return "".join(pieces)


def _blank(text: str, fill: str = " ") -> str:
    return "".join(char if char == "\n" else fill for char in text)


def _fits(texts: list[str], href: str) -> bool:
    """Whether ``href`` is ``texts`` with anything between them (a glob)."""
    first, *middle, last = texts
    if len(href) < len(first) + len(last) or not (href.startswith(first) and href.endswith(last)):
        return False
    at, end = len(first), len(href) - len(last)
    for text in middle:  # the leftmost place of each leaves the most room for the rest
        found = href.find(text, at, end)
        if found < 0:
            return False
        at = found + len(text)
    return True


_BRACKETS = re.compile(r"\\.|[\[\]]|\n[ \t]*\n", re.S)


def _bracket_pairs(text: str) -> dict[int, int]:
    """The offset of the ``[`` each ``]`` closes, within a paragraph (a
    Markdown link's text never spans a blank line): one pass."""
    pairs: dict[int, int] = {}
    open_at: list[int] = []
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token == "[":
            open_at.append(match.start())
        elif token == "]":
            if open_at:
                pairs[match.start()] = open_at.pop()
        elif token[0] == "\n":
            open_at.clear()
    return pairs


class _Lines:
    """Offsets in a text as (line, column), both from 1."""

    def __init__(self, text: str) -> None:
        self.starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def of(self, offset: int) -> tuple[int, int]:
        line = bisect_right(self.starts, offset)
        return line, offset - self.starts[line - 1] + 1
