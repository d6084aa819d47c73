"""What the core knows about a subscriber: plain values, no database row."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

FIELDS = ("email", "name", "first_name", "locale", "timezone", "tags", "attributes")
"""The fields of the ``subscriber`` object templates and ``when`` conditions see
(:meth:`Subscriber.template_context`)."""


class SubscriberFields(Protocol):
    """Anything with a subscriber's columns: an ORM row, a Core row, a sample."""

    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def first_name(self) -> str | None: ...
    @property
    def locale(self) -> str | None: ...
    @property
    def timezone(self) -> str | None: ...
    @property
    def tags(self) -> Iterable[str] | None: ...
    @property
    def attributes(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class Subscriber:
    """A subscriber as templates and conditions see it.

    ``first_name`` is the first word of ``name`` unless given explicitly.
    ``timezone`` and ``locale`` may be None: the sequence's defaults apply.
    """

    email: str
    name: str = ""
    given_first_name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    tags: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    trigger_properties: Mapping[str, Any] = field(default_factory=dict)
    """The properties of the app event that started this enrollment (one
    enrollment's view: ``trigger.properties`` in templates and conditions)."""

    @classmethod
    def of(cls, row: SubscriberFields) -> Subscriber:
        """The plain-value view of a stored (or sample) subscriber."""
        return cls(
            email=row.email,
            name=row.name or "",
            given_first_name=row.first_name,
            locale=row.locale,
            timezone=row.timezone,
            tags=tuple(row.tags or ()),
            attributes=dict(row.attributes or {}),
        )

    @property
    def first_name(self) -> str:
        if self.given_first_name:
            return self.given_first_name
        parts = self.name.split()
        return parts[0] if parts else ""

    def template_context(self, default_locale: str, default_timezone: str) -> dict[str, Any]:
        """The ``subscriber`` object exposed to templates and ``when`` expressions."""
        return {
            "email": self.email,
            "name": self.name,
            "first_name": self.first_name,
            "locale": self.locale or default_locale,
            "timezone": self.timezone or default_timezone,
            "tags": list(self.tags),
            "attributes": dict(self.attributes),
        }

    def trigger_context(self) -> dict[str, Any]:
        """The ``trigger`` object templates and ``when`` expressions see."""
        return {"properties": dict(self.trigger_properties)}
