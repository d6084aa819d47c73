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
split their consent and unsubscribe state across two rows. Tags, on the other
hand, are case-sensitive, as in sequence triggers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from email_validator import EmailNotValidError, validate_email

from nurture.core.places import check_locale, check_timezone
from nurture.errors import NurtureError

__all__ = [
    "InvalidSubscriberError",
    "SubscriberInput",
    "check_length",
    "given",
    "normalise_email",
]


class InvalidSubscriberError(NurtureError):
    """An address, time zone, locale, tag or attribute was refused; says which and why."""


def normalise_email(text: str) -> str:
    """The address as stored: syntax-checked, Unicode-normalised, lower-cased.

    No DNS lookup (``check_deliverability=False``): imports must not depend on
    the network, and a typo'd domain shows up as a bounce anyway.
    """
    candidate = text.strip()
    if not candidate:
        raise InvalidSubscriberError("email address is empty")
    try:
        normalized = validate_email(candidate, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidSubscriberError(f"invalid email address {candidate!r}: {exc}") from exc
    return normalized.lower()


def check_length(what: str, value: str, limit: int) -> str:
    """``value`` if it fits its column, else a refusal naming ``what``."""
    # SQLite does not enforce VARCHAR lengths and PostgreSQL would fail with a
    # DataError naming no field: check here, with a message a person can act on.
    if len(value) > limit:
        raise InvalidSubscriberError(f"{what} is longer than {limit} characters")
    return value


def given(value: str | None) -> str | None:
    """``value`` stripped, or None when it is missing or blank ("not given")."""
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


def _tags(values: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}  # a dict keeps the first-seen order
    for value in values:
        tag = value.strip()
        if tag:
            seen.setdefault(check_length(f"tag {tag!r}", tag, 100), None)
    return tuple(seen)


def _attributes(values: Mapping[str, Any]) -> Mapping[str, Any]:
    result: dict[str, Any] = {}
    for key, value in values.items():
        name = key.strip() if isinstance(key, str) else ""
        if not name:
            raise InvalidSubscriberError(f"attribute name {key!r} must be a non-empty string")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise InvalidSubscriberError(
                f"attribute {name!r}: value {value!r} cannot be stored as JSON"
            ) from exc
        result[name] = value
    return MappingProxyType(result)


def _place(check: Callable[[str], str], value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check(value)
    except ValueError as exc:
        raise InvalidSubscriberError(str(exc)) from exc


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
        as a BCP 47 tag (``sv_se`` -> ``sv-SE``), blank tags dropped and
        repeated ones kept once. Raises :class:`InvalidSubscriberError` naming
        the first refused field.
        """
        first = given(first_name)
        return cls(
            email=check_length("email address", normalise_email(email), 320),
            name=check_length("name", name.strip(), 200),
            first_name=check_length("first name", first, 100) if first else None,
            timezone=_place(check_timezone, given(timezone)),
            locale=_place(check_locale, given(locale)),
            tags=_tags(tags),
            attributes=_attributes(attributes or {}),
        )
