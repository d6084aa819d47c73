"""What a subscriber is made of, checked once: :class:`SubscriberInput`.

The CLI (``subscribers add``), the CSV import and the web forms all turn what
they were given into a :class:`SubscriberInput` with :meth:`SubscriberInput.parse`,
so an address, zone or tag is accepted or refused the same way everywhere.
A refusal is an :class:`InvalidSubscriberError` whose message names the field.

Pure: no database, no clock. Time zones and locales are checked by
:mod:`nurture.core.places`, the same check sequence files get.

**Addresses are case-insensitive.** :func:`normalise_email` lower-cases the
whole address, local part included. RFC 5321 allows a server to treat
``Anna@`` and ``anna@`` as different mailboxes, but no mainstream provider
does, and treating them as two subscribers would mail one person twice and
split their consent and unsubscribe state across two rows.

**Tags are normalised too** (:func:`normalise_tag`): surrounding spaces and
quotes dropped, case folded (``B2B`` and ``b2b`` are one tag), and a value
holding :data:`TAG_SEPARATORS` split (``--tag "b2b,lead"`` is two tags, as a
Mailchimp ``TAGS`` or Kit ``tags`` cell is). Sequence triggers are compared
the same way (:func:`nurture.audience.enrollment.triggered_on_subscribe`).

**Limits.** Every field is bounded, so one row cannot overflow a column, fill
the database or break a send: see :data:`LIMITS`. No field may hold a NUL or
another control character (PostgreSQL refuses NUL in text, and an escape
sequence would reach the admin's terminal); names, tags and attribute keys
must be one line (a CR/LF in a name would be a header injection attempt, and
SendGrid refuses the whole request). Attribute values may span lines (a
postal address) but hold no other control character.

**Internationalised addresses** (``jörg@example.com``, ``anna@exämple.se``)
are accepted. A Unicode domain goes out IDNA-encoded everywhere; a Unicode
local part needs SMTPUTF8, which not every transport has (see the README):
such an email fails alone, with a reason, at send time.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from email_validator import EmailNotValidError, validate_email

from nurture.core.places import check_locale, check_timezone
from nurture.errors import NurtureError, quoted

__all__ = [
    "LIMITS",
    "TAG_SEPARATORS",
    "InvalidSubscriberError",
    "SubscriberInput",
    "check_length",
    "check_name",
    "check_text",
    "given",
    "normalise_email",
    "normalise_tag",
    "split_tags",
]


class InvalidSubscriberError(NurtureError):
    """An address, time zone, locale, tag or attribute was refused; says which and why."""


LIMITS: Mapping[str, int] = MappingProxyType(
    {
        # RFC 5321 4.5.3.1.3 limits a path to 256 octets, which leaves 254 for the
        # address; email_validator enforces the same.
        "email": 254,
        "name": 200,
        "first_name": 100,
        "tags": 100,
        "tag": 100,
        "attributes": 50,
        "attribute_key": 100,
        # Characters of a value as JSON: a string of 2,000 characters, or a list
        # or object as long once written out.
        "attribute_value": 2000,
    }
)
"""The most any one field may hold (characters, or items for ``tags`` and ``attributes``)."""

# Line breaks a multi-line value may contain; every other control character is refused.
_LINE_BREAKS = frozenset("\t\n\r")
# Unicode line and paragraph separators: not control characters, but line
# breaks to str.splitlines() and to some mail clients.
_SEPARATORS = frozenset("\u2028\u2029")


def _control(value: str, *, one_line: bool) -> str | None:
    """The first character ``value`` may not hold, or None."""
    if value.isprintable():
        # No control character (category Cc) and no line or paragraph separator.
        return None
    for char in value:
        category = unicodedata.category(char)
        if category == "Cc" and (one_line or char not in _LINE_BREAKS):
            return char
        if category == "Cs":  # a lone surrogate (from JSON's \ud800): UTF-8 cannot encode it
            return char
        if one_line and char in _SEPARATORS:
            return char
    return None


def check_text(what: str, value: str, limit: int, *, one_line: bool = True) -> str:
    """``value`` if it fits ``limit`` and holds no control character, else a refusal.

    ``one_line=False`` lets tabs and line breaks through (free text); a NUL or
    an escape is refused either way. The message names ``what`` and the
    character's code point, never the rest of the value.
    """
    check_length(what, value, limit)
    bad = _control(value, one_line=one_line)
    if bad is not None:
        if bad in "\r\n" or bad in _SEPARATORS:
            kind = "a line break"
        elif unicodedata.category(bad) == "Cs":
            kind = "an unpaired surrogate"
        else:
            kind = "a control character"
        raise InvalidSubscriberError(f"{what} contains {kind} (U+{ord(bad):04X})")
    return value


def normalise_email(text: str) -> str:
    """The address as stored: syntax-checked, Unicode-normalised, lower-cased.

    No DNS lookup (``check_deliverability=False``): imports must not depend on
    the network, and a typo'd domain shows up as a bounce anyway.
    """
    candidate = text.strip()
    if not candidate:
        raise InvalidSubscriberError("email address is empty")
    if len(candidate) > LIMITS["email"]:
        # Checked first: the refusal below quotes the address.
        raise InvalidSubscriberError(f"email address is longer than {LIMITS['email']} characters")
    if "\ufffd" in candidate:
        # What a decoder leaves of bytes that were not UTF-8 (a form's "%FF"):
        # not a character anyone's address has, and not the one they typed.
        raise InvalidSubscriberError(
            "email address has bytes that are not UTF-8 text (U+FFFD where they were)"
        )
    local, at, domain = candidate.partition("@")
    if "=?" in candidate.rpartition("@")[0]:
        # Legal characters, but mail programs (Python's parser among them)
        # decode "=?utf-8?q?ceo=40example.se?=@evil.example" in a To: header
        # as a different mailbox than the one stored and shown.
        raise InvalidSubscriberError(
            f"invalid email address {candidate!r}: '=?' before the @ reads as "
            "encoded text (RFC 2047) to mail programs"
        )
    if at and len(local) <= _LOCAL_MAX and _DOT_ATOM.fullmatch(local):
        # The common case, a plain ASCII local part: email-validator keeps it as
        # written, so only the domain needs checking, once per domain (a list
        # of a million addresses has a few thousand domains).
        checked = _checked_domain(domain)
        if checked is not None and len(local) + 1 + len(checked) <= _ADDRESS_MAX:
            return f"{local}@{checked}".lower()
    try:
        normalized = validate_email(candidate, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidSubscriberError(f"invalid email address {candidate!r}: {exc}") from exc
    return normalized.lower()


# RFC 5322 dot-atom: what email-validator accepts unchanged as an ASCII local part.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LOCAL_MAX = 64  # characters of a local part (RFC 5321)
_ADDRESS_MAX = 254  # characters of a whole address, as email-validator counts


@lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str | None:
    """``domain`` as email-validator normalises it, or None if it refuses it."""
    try:
        return validate_email(f"x@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


def check_length(what: str, value: str, limit: int) -> str:
    """``value`` if it fits its column, else a refusal naming ``what``."""
    # SQLite does not enforce VARCHAR lengths and PostgreSQL would fail with a
    # DataError naming no field: check here, with a message a person can act on.
    if len(value) > limit:
        raise InvalidSubscriberError(f"{what} is longer than {limit} characters")
    if "\x00" in value:
        # PostgreSQL cannot store NUL in text; the whole transaction would fail.
        raise InvalidSubscriberError(f"{what} contains a NUL character (U+0000)")
    return value


def given(value: str | None) -> str | None:
    """``value`` stripped, or None when it is missing or blank ("not given")."""
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


TAG_SEPARATORS = (",", ";", "|")
"""What separates tags in one value: ``,`` (Kit, Mailchimp and most people),
``;`` and ``|`` (spreadsheets in locales where ``,`` separates columns)."""

_TAG_SPLIT = re.compile("|".join(re.escape(s) for s in TAG_SEPARATORS))
# Mailchimp's TAGS cell quotes each tag: "Customer","VIP".
_TAG_QUOTES = "\"'"


# Invisible characters a copy from a web page or a document brings along
# (zero-width space, word joiner, byte order mark, bidi marks, overrides and
# isolates): "b2b\u200b" printed as "b2b" and silently matched no trigger.
# ZWJ and ZWNJ stay: they change how Persian, Indic scripts and emoji read.
_INVISIBLE = re.compile("[\u200b\u200e\u200f\u2060\ufeff\u061c\u202a-\u202e\u2066-\u2069]")


def normalise_tag(value: str) -> str:
    """A tag as stored and compared: stripped of spaces, quotes and invisible
    characters, case-folded (``" VIP "`` -> ``"vip"``); ``""`` for a blank one."""
    return _INVISIBLE.sub("", value).strip().strip(_TAG_QUOTES).strip().casefold()


def split_tags(values: Iterable[str]) -> list[str]:
    """Every tag in ``values``, each value split at :data:`TAG_SEPARATORS` and
    normalised; blanks dropped, repeats kept (:class:`SubscriberInput` drops them)."""
    return [
        tag for value in values for part in _TAG_SPLIT.split(value) if (tag := normalise_tag(part))
    ]


def _tags(values: Iterable[str]) -> tuple[str, ...]:
    given = tuple(values)
    if all(type(value) is str for value in given) and sum(map(len, given)) <= _CACHED_TAGS:
        # A list's tags repeat from row to row: checked once per distinct value.
        return _checked_tags(given)
    return _tags_checked(given)


_CACHED_TAGS = 1000
"""Characters of tags at most whose check is remembered (a hostile file's
megabyte cells are checked every time rather than kept)."""


@lru_cache(maxsize=4096)
def _checked_tags(values: tuple[str, ...]) -> tuple[str, ...]:
    return _tags_checked(values)


def _tags_checked(values: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}  # a dict keeps the first-seen order
    for index, tag in enumerate(split_tags(values), 1):
        # Named by position: a tag with an escape in it is not for printing.
        seen.setdefault(check_text(f"tag {index}", tag, LIMITS["tag"]), None)
        if len(seen) > LIMITS["tags"]:
            raise InvalidSubscriberError(f"tags: more than {LIMITS['tags']}")
    return tuple(seen)


def _strings(value: Any) -> Iterable[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


@lru_cache(maxsize=1024)
def _checked_attribute_name(name: str) -> str:
    """An attribute's name, checked once per distinct name (a file's columns
    name every row's attributes)."""
    return check_text("attribute name", name, LIMITS["attribute_key"])


def _attributes(values: Mapping[str, Any]) -> Mapping[str, Any]:
    if len(values) > LIMITS["attributes"]:
        raise InvalidSubscriberError(f"attributes: more than {LIMITS['attributes']}")
    result: dict[str, Any] = {}
    for key, value in values.items():
        name = key.strip() if isinstance(key, str) else ""
        if not name:
            # repr() escapes whatever the key holds.
            raise InvalidSubscriberError(f"attribute name {key[:50]!r} must be a non-empty string")
        _checked_attribute_name(name)
        limit = LIMITS["attribute_value"]
        if type(value) is str and len(value) <= limit and value.isprintable():
            # The common case (every CSV cell): one line of text, nothing to refuse.
            result[name] = value
            continue
        what = f"attribute {name!r}"
        if isinstance(value, str):
            # A string is always JSON: only its length and characters are checked.
            if len(value) > limit:
                raise InvalidSubscriberError(f"{what} is longer than {limit} characters")
            result[name] = check_text(what, value, limit, one_line=False)
            continue
        try:
            written = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidSubscriberError(f"{what}: value cannot be stored as JSON") from exc
        if len(value if isinstance(value, str) else written) > limit:
            raise InvalidSubscriberError(f"{what} is longer than {limit} characters")
        for text in _strings(value):
            check_text(what, text, limit, one_line=False)
        result[name] = value
    return MappingProxyType(result)


def _place(check: Callable[[str], str], value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check(value)
    except ValueError as exc:
        raise InvalidSubscriberError(quoted(exc, value)) from exc


# Bidirectional embeddings, overrides and isolates (U+202A-U+202E,
# U+2066-U+2069): "\u202eevil" shows as "live" and turns the rest of a subject
# ("Welcome, {{ first_name }}") around. Names in any script read right without
# them (the marks U+200E/U+200F stay allowed); addresses refuse them too.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def check_name(what: str, value: str, limit: int) -> str:
    """A name (one line, at most ``limit``, no control character) without
    bidirectional overrides or isolates; else a refusal naming ``what``."""
    check_text(what, value, limit)
    bidi = _BIDI_CONTROLS.search(value)
    if bidi is not None:
        raise InvalidSubscriberError(
            f"{what} contains a bidirectional override or isolate "
            f"(U+{ord(bidi.group()):04X}), which turns text around"
        )
    return value


@dataclass(frozen=True)
class SubscriberInput:
    """One subscriber's checked fields, as given: None (or empty) means "not given".

    Build it with :meth:`parse`. Re-adding an address applies only what is
    given, so "not given" must stay distinguishable from a value.
    """

    email: str
    name: str
    first_name: str | None
    timezone: str | None
    locale: str | None
    tags: tuple[str, ...]
    attributes: Mapping[str, Any]

    @classmethod
    def parse(
        cls,
        *,
        email: str,
        name: str = "",
        first_name: str | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        tags: Iterable[str] = (),
        attributes: Mapping[str, Any] | None = None,
    ) -> SubscriberInput:
        """Check and normalise raw values (surrounding spaces are ignored).

        The address is normalised (:func:`normalise_email`), the locale written
        as a BCP 47 tag (``sv_se`` -> ``sv-SE``), tags split and normalised
        (:func:`split_tags`), blank ones dropped and repeated ones kept once.
        Raises :class:`InvalidSubscriberError` naming the first refused field.
        """
        first = given(first_name)
        return cls(
            email=check_length("email address", normalise_email(email), LIMITS["email"]),
            name=check_name("name", name.strip(), LIMITS["name"]),
            first_name=check_name("first name", first, LIMITS["first_name"]) if first else None,
            timezone=_place(check_timezone, given(timezone)),
            locale=_place(check_locale, given(locale)),
            tags=_tags(tags),
            attributes=_attributes(attributes or {}),
        )
