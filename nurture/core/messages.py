"""What a marketer reads when a sequence file is wrong: plain words, no regexes.

The YAML parser and pydantic describe a problem for programmers (``String
should match pattern '^[a-z0-9][a-z0-9_-]*$'``, ``steps.1.wait``, ``found
character '\\t' that cannot start any token``). This module turns those into
messages someone who edits YAML by hand can act on:

- a key path names the step by its id: ``steps[welcome].wait``, not ``steps.1``;
- a slug that does not fit says which characters are allowed;
- an unknown key suggests the nearest known one, and when a required key is
  missing beside it, that one (``unknown key 'subjct' — did you mean
  'subject'?``), instead of two unrelated messages;
- a YAML syntax error gets a hint about its usual cause (a tab, indentation,
  an unquoted ``:``, an unclosed quote).
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from nurture.core.model import SLUG
from nurture.core.model import Sequence as SequenceModel
from nurture.core.yamltext import quote_cause
from nurture.errors import Diagnostic

__all__ = ["key_path", "schema_diagnostics", "yaml_hint"]

_SLUG = re.compile(SLUG)
SLUG_RULE = (
    "use lowercase letters, digits, - and _ (starting with a letter or a digit), "
    "for example 'sales-process'"
)


def key_path(loc: Iterable[str | int], data: Any) -> str:
    """``loc`` as the marketer wrote it: ``steps[welcome].subject``.

    A list item is named by its ``id`` when it has a valid one, else by its
    position counted from 1 (``steps[#2]``). Parts that are not in the file
    (pydantic's union tags such as ``str``) are left out.
    """
    text = ""
    node = data
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
            item_id = node.get("id") if isinstance(node, Mapping) else None
            named = isinstance(item_id, str) and _SLUG.match(item_id)
            text += f"[{item_id}]" if named else f"[#{part + 1}]"
        elif isinstance(part, str) and isinstance(node, Mapping):
            if part not in node and _is_member(part):
                continue  # a union member's name (``dict[str,str]``), not a key
            text += f".{part}" if text else part
            node = node.get(part)
        else:
            break
    return text


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``list[Step]``, ``SendWindow | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Union, types.UnionType) or get_args(annotation):
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _known_keys(parent: Iterable[str | int]) -> list[str]:
    """The keys the file format allows at ``parent`` (a path of keys and list indexes)."""
    model: type[BaseModel] | None = SequenceModel
    for part in parent:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def _closest(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return found[0] if found else None


def _message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    loc = error.get("loc", ())
    value = error.get("input")
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r}"
    if kind == "string_pattern_mismatch":
        if (error.get("ctx") or {}).get("pattern") != SLUG:
            return f"{value!r} does not have the expected form"
        what = "an id" if loc and loc[-1] == "id" else "a valid name"
        return f"{value!r} is not {what}: {SLUG_RULE}"
    if kind == "string_too_long" and isinstance(value, str):
        limit = (error.get("ctx") or {}).get("max_length")
        return f"at most {limit} characters; this one has {len(value):,}"
    if kind in ("too_long", "too_short") and isinstance(value, list):
        ctx = error.get("ctx") or {}
        if kind == "too_long":
            return f"at most {ctx.get('max_length')} items here; this list has {len(value)}"
        return f"at least {ctx.get('min_length')} item(s) here; this list has {len(value)}"
    if kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
        return f'{value} is a number here, and this is a text: put it in quotes ("{value}")'
    if kind in ("date_from_datetime_parsing", "date_parsing", "date_type") and isinstance(
        value, str
    ):
        return f"{value!r} is not a date: write it as YYYY-MM-DD, for example 2026-12-24"
    if kind == "literal_error":
        expected = (error.get("ctx") or {}).get("expected", "")
        return f"{value!r} is not allowed here: use {expected}"
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


def _unknown_key_messages(errors: Sequence[Mapping[str, Any]]) -> tuple[dict[int, str], set[int]]:
    """For each unknown key, a "did you mean" (a missing key beside it first);
    returns the messages by error index and the missing-key errors they explain."""
    missing: dict[tuple[Any, ...], list[int]] = {}
    for index, error in enumerate(errors):
        if error.get("type") == "missing":
            missing.setdefault(tuple(error["loc"][:-1]), []).append(index)
    messages: dict[int, str] = {}
    explained: set[int] = set()
    for index, error in enumerate(errors):
        if error.get("type") != "extra_forbidden":
            continue
        parent, key = tuple(error["loc"][:-1]), str(error["loc"][-1])
        beside = {
            str(errors[i]["loc"][-1]): i for i in missing.get(parent, []) if i not in explained
        }
        guess = _closest(key, beside, cutoff=0.4)
        unknowns = [
            e
            for e in errors
            if e.get("type") == "extra_forbidden" and tuple(e["loc"][:-1]) == parent
        ]
        if guess is None and len(beside) == 1 and len(unknowns) == 1:
            guess = next(iter(beside))  # one key too many, one missing: most likely a rename
        if guess is not None:
            explained.add(beside[guess])
            messages[index] = f"unknown key {key!r} — did you mean {guess!r}? (it is missing)"
            continue
        messages[index] = unknown_key_message(key, _known_keys(parent))
    return messages, explained


def unknown_key_message(key: str, known: Sequence[str]) -> str:
    """``unknown key 'x'``, with the nearest of the ``known`` keys, or all of them."""
    near = _closest(key, known)
    if near is not None:
        return f"unknown key {key!r} — did you mean {near!r}?"
    return f"unknown key {key!r} (known keys here: {', '.join(known)})"


def schema_diagnostics(
    display: str,
    data: Any,
    position: Callable[[tuple[str | int, ...]], tuple[int, int]],
    exc: ValidationError,
    text: str | None = None,
) -> list[Diagnostic]:
    """pydantic's errors as ``file:line:column: key: message`` diagnostics
    (``text``, the file's, lets an empty value's message say why it is empty)."""
    errors = list(exc.errors())
    unknown, explained = _unknown_key_messages(errors)
    explained |= _other_branches(errors, data)
    lines = text.splitlines() if text is not None else []
    found: dict[tuple[int, int, str], Diagnostic] = {}
    for index, error in enumerate(errors):
        if index in explained:
            continue
        loc = tuple(error["loc"])
        line, column = position(loc)
        key = key_path(loc, data)
        message = unknown.get(index) or _message(error)
        # A type's error on an empty value (a validator's own message, which
        # knows the field, stays as it is).
        if error.get("input", "") is None and str(error.get("type", "")).endswith("_type"):
            message = _empty_value(lines[line - 1] if 0 < line <= len(lines) else "", message)
        shown = f"{key}: {message}" if key else message
        found.setdefault((line, column, shown), Diagnostic(display, line, column, shown))
    return list(found.values())


def _empty_value(line: str, message: str) -> str:
    """The message for a value YAML read as empty (null): most often a text
    that starts with ``#``, which YAML takes for a comment."""
    if "#" in line:
        return (
            "this value is empty: YAML reads an unquoted # as the start of a comment; "
            'put the text in quotes ("#1 ...")'
        )
    return f"this value is empty: write it after the ':' ({message.lower()})"


def _union_branch(loc: Sequence[str | int], data: Any) -> tuple[tuple[str | int, ...], str] | None:
    """Where ``loc`` goes through one member of a union (pydantic names it:
    ``str``, ``dict[str,str]``): the path to the union and that member's name;
    None when every part of ``loc`` is in the file."""
    node = data
    for at, part in enumerate(loc):
        in_list = isinstance(part, int) and isinstance(node, list) and part < len(node)
        if in_list or (isinstance(part, str) and isinstance(node, Mapping) and part in node):
            node = node[part]
        elif isinstance(part, str) and not isinstance(node, Mapping | list):
            return tuple(loc[:at]), part
        elif isinstance(part, str) and isinstance(node, Mapping) and part not in node:
            # A member name (``dict[str,str]``) inside a mapping the file wrote.
            return (tuple(loc[:at]), part) if _is_member(part) else None
        else:
            return None
    return None


_MEMBERS = frozenset({"str", "int", "float", "bool", "list", "dict", "date", "datetime"})
"""pydantic's names of union members that are not keys of the file."""


def _is_member(part: str) -> bool:
    return "[" in part or part in _MEMBERS


def _other_branches(errors: Sequence[Mapping[str, Any]], data: Any) -> set[int]:
    """The errors of union members that do not match what the file wrote.

    A text given per language (``str | dict[str, str]``) with one language
    left empty fails both members: "should be a valid string" for the whole
    mapping, and for the empty language. The file wrote a mapping, so only
    the mapping's error is about it."""
    branches: dict[tuple[str | int, ...], list[tuple[int, str]]] = {}
    for index, error in enumerate(errors):
        found = _union_branch(tuple(error["loc"]), data)
        if found is not None:
            branches.setdefault(found[0], []).append((index, found[1]))
    dropped: set[int] = set()
    for where, members in branches.items():
        if len({member for _, member in members}) < 2:
            continue
        node = _node_at(data, where)
        wanted = (
            "dict" if isinstance(node, Mapping) else "list" if isinstance(node, list) else "str"
        )
        if any(member.startswith(wanted) for _, member in members):
            dropped |= {index for index, member in members if not member.startswith(wanted)}
    return dropped


def _node_at(data: Any, where: Sequence[str | int]) -> Any:
    node = data
    for part in where:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


# (words in the parser's message, what to do about it), first match wins.
_YAML_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("'\\t'", "\t"), "a tab character: indent with spaces, YAML does not allow tabs"),
    (
        ("mapping values are not allowed",),
        "a ':' YAML did not expect: check this line's indentation, or put a value "
        "that contains ': ' in quotes",
    ),
    (
        ("could not find expected ':'",),
        "a line that is not 'key: value': check the indentation of this line and "
        "the one above, and that the key ends with ':'",
    ),
    (
        ("expected <block end>", "did not find expected key", "did not find expected '-'"),
        "the indentation does not line up: the keys of one mapping, and the '-' "
        "of the items of one list, must start in the same column",
    ),
    (
        ("while scanning a quoted scalar", "found unexpected end of stream"),
        "a quote that is not closed: end the text with the same quote it starts with",
    ),
    (
        ("while parsing a flow sequence",),
        "a '[' list that is not closed: end it with ']' and separate its items with ','",
    ),
    (
        ("while parsing a flow mapping",),
        "a '{' mapping that is not closed: end it with '}' and separate its entries with ','",
    ),
    (
        ("that cannot start any token",),
        "a value that starts with a character YAML reserves (@, `, %): put it in quotes",
    ),
)


# Where the parser gives up on these, the cause is where the thing opened.
_OPENED = (
    "while scanning a quoted scalar",
    "while parsing a flow sequence",
    "while parsing a flow mapping",
)


def yaml_problem(exc: MarkedYAMLError, text: str = "") -> tuple[int, int, str]:
    """The YAML parser's error as (line, column, message with a hint).

    A quote, ``[`` or ``{`` left open is reported where it opens, not where
    the parser gave up (often the end of the file): the message says both.
    Given the file's ``text``, so is a quoted value that ends too early or
    too late (:func:`~nurture.core.yamltext.quote_cause`).
    """
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = (exc.problem or "invalid YAML").strip().split("\n")[0]
    if "duplicate" in problem:
        return line, column, problem
    context = (exc.context or "").strip()
    if context:
        problem = f"{context}: {problem}"
    cause = quote_cause(text, line, column) if text and mark is not None else None
    if cause is not None and context not in _OPENED:
        return cause[0], cause[1], f"{cause[2]} (YAML: {problem} at line {line}, column {column})"
    opened = exc.context_mark
    if context in _OPENED and opened is not None and exc.problem_mark is not None:
        problem = f"{problem} at line {line}, column {column}"
        line, column = opened.line + 1, opened.column + 1
    return line, column, yaml_hint(problem)


def reader_problem(exc: ReaderError, text: str) -> tuple[int, int, str]:
    """A character YAML does not allow in a file (a control character, for one),
    as (line, column, message): where it is in ``text``, and what to do."""
    position = exc.position if isinstance(exc.position, int) else 0
    position = min(max(position, 0), len(text))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    character = exc.character
    if not isinstance(character, int):
        return line, column, f"a character YAML does not allow: {exc.reason}"
    escape = f"\\x{character:02x}" if character < 0x100 else f"\\u{character:04x}"
    kind = ", a control character" if character < 0x20 or 0x7F <= character < 0xA0 else ""
    message = (
        f"a character YAML does not allow (U+{character:04X}{kind}):"
        f' delete it, or write it as "{escape}" inside double quotes'
    )
    return line, column, message


def yaml_hint(problem: str) -> str:
    """``problem`` (the YAML parser's words) with a hint about its usual cause."""
    for needles, hint in _YAML_HINTS:
        if any(needle in problem for needle in needles):
            return f"{hint} (YAML: {problem})"
    return f"invalid YAML: {problem}"
