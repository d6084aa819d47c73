"""Reading YAML text safely: the checks every sequence or sample file passes
before its values are looked at.

A file is refused, at the place it goes wrong where there is one, when its
lists and mappings nest too deep (checked on the text first: the parser
recurses per level), when its aliases expand to too many values or refer to
themselves (an "alias bomb"), or when it uses a YAML tag (``!!binary``,
``!custom``): tags make the parser build values the file format has no use
for (bytes, other types), so a marketer's file says what it means in plain
values instead.
"""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor, SafeConstructor
from ruamel.yaml.error import YAMLError
from ruamel.yaml.tokens import ScalarToken, TagToken

from nurture.errors import clip

_SCALARS = {
    "tag:yaml.org,2002:timestamp": "date or time",
    "tag:yaml.org,2002:int": "number",
    "tag:yaml.org,2002:float": "number",
}


def _placed(base: type[Any]) -> type[Any]:
    """``base`` (a ruamel constructor class) whose dates and numbers that do
    not exist (``2026-02-30``, a 5,000-digit number) are refused at their
    place, as a YAML error; the library raises a bare ValueError, which
    could only be reported at 1:1."""

    class Placed(base):  # type: ignore[misc]
        pass

    for tag, kind in _SCALARS.items():
        construct = base.yaml_constructors[tag]

        def checked(self: Any, node: Any, construct: Any = construct, kind: str = kind) -> Any:
            try:
                return construct(self, node)
            except (ValueError, OverflowError) as exc:
                shown = clip(str(node.value))
                reason = str(exc).split(":")[0]  # not Python's advice on limits
                problem = f"{shown} is not a valid {kind} ({reason})"
                raise ConstructorError(None, None, problem, node.start_mark) from exc

        Placed.add_constructor(tag, checked)
    return Placed


_ROUND_TRIP = _placed(RoundTripConstructor)
_SAFE = _placed(SafeConstructor)


def safe_yaml() -> YAML:
    """A YAML reader of plain values (no positions) that places bad dates and numbers."""
    yaml = YAML(typ="safe", pure=True)
    yaml.Constructor = _SAFE
    return yaml


def positioned_yaml() -> YAML:
    """A YAML reader that keeps positions and refuses duplicate keys."""
    yaml = YAML(typ="rt")
    yaml.Constructor = _ROUND_TRIP  # round-trip: the only loader that records positions
    yaml.allow_duplicate_keys = False
    return yaml


MAX_DEPTH = 50
"""How deeply a sequence file may nest lists and mappings (the example: 5)."""
MAX_VALUES = 100_000
"""How many values a sequence file may hold once its aliases are expanded: an
"alias bomb" (a few lines whose aliases expand to billions) is refused."""


def shape_problem(data: Any) -> str | None:
    """Why ``data`` (as loaded, aliases shared) is too deep, too large once
    expanded, or refers to itself; None when its shape is fine. Linear in the
    distinct nodes: each container's expanded size is counted once."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise _Refused("an alias refers to the value that contains it")
        if depth > MAX_DEPTH:
            raise _Refused(f"the file nests lists and mappings more than {MAX_DEPTH} deep")
        open_.add(key)
        children = list(node.values()) if isinstance(node, dict) else node
        total = 1 + sum(size(child, depth + 1) for child in children)
        if total > MAX_VALUES:
            raise _Refused(
                f"the file holds more than {MAX_VALUES:,} values once its aliases are "
                "expanded (are aliases (*name) repeating a large value?)"
            )
        open_.discard(key)
        sizes[key] = total
        return total

    try:
        size(data, 0)
    except _Refused as refused:
        return str(refused)
    return None


def too_deep_brackets(text: str) -> tuple[int, int] | None:
    """Where ``[`` and ``{`` first nest more than :data:`MAX_DEPTH` deep, as a
    1-based (line, column), or None. The YAML parser recurses once per level
    and takes minutes over thousands of levels, so this is checked first; quoted
    text and comments are skipped, roughly, which is all a refusal needs."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth, line, column, quote = 0, 1, 0, ""
    in_comment = False
    for char in text:
        column += 1
        if char == "\n":
            line, column, in_comment = line + 1, 0, False
            continue
        if in_comment:
            continue
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            in_comment = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line, column
        elif char in "]}":
            depth = max(0, depth - 1)
    return None


class _Refused(Exception):
    """A shape :func:`shape_problem` refuses."""


def first_tag(text: str) -> tuple[int, int, str] | None:
    """The first explicit YAML tag in ``text``, as a 1-based (line, column)
    and the tag as written; None when there is none (or the text does not
    scan, which the parser reports itself)."""
    if "!" not in text:
        return None
    try:
        for token in positioned_yaml().scan(text):
            if isinstance(token, TagToken):
                handle, suffix = token.value
                if handle is None:
                    written = "!" if suffix == "!" else f"!<{suffix}>"
                else:
                    written = f"{handle}{suffix}"
                mark = token.start_mark
                return mark.line + 1, mark.column + 1, written
    except YAMLError:
        return None
    return None


def quote_cause(text: str, line: int, column: int) -> tuple[int, int, str] | None:
    """When the YAML error at 1-based (``line``, ``column``) comes from a quote:
    where that quote is and what went wrong, else None.

    Two mistakes give errors whose place and words point elsewhere: a quote
    inside a quoted value (``'Don't'`` ends at ``Don'``, and the parser
    stumbles on the rest), and a closing quote left out (the value runs on
    to the next quote in the file, and the parser stumbles lines below).
    """
    last: Any = None
    try:
        for token in positioned_yaml().scan(text):
            start = token.start_mark
            if (start.line + 1, start.column + 1) > (line, column):
                break
            if isinstance(token, ScalarToken) and token.style in ("'", '"'):
                last = token
    except YAMLError:
        pass  # the tokens before the error are all it takes
    if last is None or last.end_mark.line + 1 != line or last.end_mark.column >= column:
        return None
    quote = last.style
    opened = last.start_mark
    if opened.line != last.end_mark.line:
        return (
            opened.line + 1,
            opened.column + 1,
            f"a quote that is not closed on its line: the text runs on to line {line}"
            f" and ends at the next {quote} there; end the text with the same quote it"
            " starts with",
        )
    between = text.splitlines()[line - 1][last.end_mark.column : column - 1]
    if between.strip(" "):
        return None
    inside = "write it twice ('Don''t')" if quote == "'" else 'write it as \\"'
    other = '"' if quote == "'" else "'"
    return (
        line,
        last.end_mark.column,
        f"text after the closing quote: a value in quotes ends at its quote. To put a {quote}"
        f" inside {quote}...{quote}, {inside}, or quote the whole value with {other} instead",
    )


def tag_message(tag: str) -> str:
    """Why a tagged value is refused, and what to write instead."""
    return (
        f'YAML tags such as "{tag}" are not supported: write the value itself '
        "(in quotes to make it text)"
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def first_surrogate(data: Any) -> tuple[tuple[str | int, ...], str] | None:
    """The key path of the first key or value holding a lone surrogate (a
    ``"\\ud800"`` escape in a double-quoted YAML string: not a character, and
    no email can carry it), with that surrogate; None when there is none.
    ``data`` has passed :func:`shape_problem`, so the walk is bounded."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    seen: set[int] = set()
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            found = _SURROGATE.search(node)
            if found is not None:
                return path, found.group()
        elif isinstance(node, dict | list) and id(node) not in seen:
            seen.add(id(node))
            items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            for key, value in reversed(items):
                if isinstance(key, str) and (found := _SURROGATE.search(key)) is not None:
                    return (*path, key), found.group()
                stack.append(((*path, key), value))
    return None


def surrogate_message(char: str) -> str:
    """Why a value with a lone surrogate is refused."""
    return (
        f"not valid Unicode text: a lone surrogate (\\u{ord(char):04x}) from a \\u escape; "
        "write the character itself"
    )
