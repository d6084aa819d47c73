"""An undefined name in a template or condition, explained in the author's terms.

Jinja's ``StrictUndefined`` says ``'dict object' has no attribute
'frist_name'``: true, but it names neither the object nor what was meant. The
expression is in the source, and the values are in the scope the template ran
with, so :func:`explain_undefined` can say ``subscriber has no field
'frist_name' — did you mean 'first_name'?``, and where it is written.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Explained", "explain_undefined"]

_NO_ATTRIBUTE = re.compile(r"^'(?P<type>[^']+)' has no attribute '(?P<name>[^']+)'$")
_UNDEFINED = re.compile(r"^'(?P<name>[^']+)' is undefined$")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


@dataclass(frozen=True)
class Explained:
    """The message, and the offset in the source where the name is written (or None)."""

    message: str
    offset: int | None


def _nearest(word: str, candidates: Iterable[str]) -> str:
    names = [c for c in candidates if isinstance(c, str) and not c.startswith("_")]
    match = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f" — did you mean {match[0]!r}?" if match else ""


def _resolve(scope: Mapping[str, Any], dotted: str) -> Any:
    value: Any = scope
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def explain_undefined(message: str, source: str, scope: Mapping[str, Any]) -> Explained | None:
    """A clearer message for Jinja's UndefinedError ``message`` raised while
    running ``source`` with ``scope``; None when the source does not show
    which expression it was."""
    found = _UNDEFINED.match(message)
    if found:
        name = found.group("name")
        where = re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", source)
        hint = _nearest(name, scope)
        return Explained(f"unknown variable {name!r}{hint}", where.start() if where else None)
    found = _NO_ATTRIBUTE.match(message)
    if not found:
        return None
    name = re.escape(found.group("name"))
    # `a.b.name` or `a.b['name']`, the object path before the missing name.
    where = re.search(
        rf"(?<![\w.])(?P<object>{_NAME}(?:\.{_NAME})*)"
        rf"(?:\.(?P<attr>{name})(?!\w)|\[\s*['\"](?P<key>{name})['\"]\s*\])",
        source,
    )
    if where is None:
        return None
    obj = where.group("object")
    offset = where.start("attr") if where.group("attr") else where.start("key")
    value = _resolve(scope, obj)
    missing = found.group("name")
    if not isinstance(value, Mapping):
        return Explained(f"{obj} has no field {missing!r}", offset)
    hint = _nearest(missing, value)
    if obj.endswith(".attributes"):
        # Attributes differ from one subscriber to the next.
        return Explained(
            f"{obj} has no {missing!r} for this subscriber{hint}; for a value not "
            f"everyone has, write {obj}.get({missing!r}, '')",
            offset,
        )
    return Explained(f"{obj} has no field {missing!r}{hint}", offset)
