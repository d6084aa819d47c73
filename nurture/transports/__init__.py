"""Transports: how an email leaves nurture (outbox files, SendGrid, SMTP, memory).

The transport is chosen by name (``transport`` in ``nurture.toml``, or
``NURTURE_TRANSPORT``) from the ``nurture.transports`` entry point group, so a
plugin package can add one without touching nurture::

    [project.entry-points."nurture.transports"]
    mailgun = "nurture_mailgun:MailgunTransport"   # a class with from_settings()

See :mod:`nurture.transports.base` for the contract every transport keeps, and
:class:`BaseTransport` for the send flow the built-in ones share (a plugin may
subclass it and fill in building the request, calling the API and reading the
answer). The ``transport`` setting accepts any registered name.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, cast

from nurture.errors import ConfigurationError
from nurture.transports.base import (
    BaseTransport,
    OutgoingEmail,
    SendResult,
    Transport,
    TransportFactory,
)

if TYPE_CHECKING:
    from nurture.app.settings import Settings

__all__ = [
    "ENTRY_POINT_GROUP",
    "BaseTransport",
    "OutgoingEmail",
    "SendResult",
    "Transport",
    "create_transport",
    "delivers",
    "known_transports",
    "transport_class",
]

ENTRY_POINT_GROUP = "nurture.transports"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_transports() -> list[str]:
    """The names of every registered transport, sorted."""
    return sorted(_entry_points())


def delivers(transport: object) -> bool:
    """Whether a transport (class or instance) sends to real inboxes.

    Read from its ``delivers`` attribute (:attr:`BaseTransport.delivers`); a
    plugin that does not say is taken to deliver, so the checks that protect
    subscribers (a real secret key, an https base URL) apply to it.
    """
    return bool(getattr(transport, "delivers", True))


def transport_class(name: str) -> type[TransportFactory]:
    """The class registered under ``name``, not yet built (see :func:`create_transport`)."""
    registered = _entry_points()
    entry_point = registered.get(name)
    if entry_point is None:
        known = ", ".join(sorted(registered)) or "none (is nurture installed?)"
        raise ConfigurationError(
            f"setting 'transport' (in nurture.toml as transport, or NURTURE_TRANSPORT): "
            f"unknown transport {name!r}; known transports: {known}"
        )
    try:
        return cast(type[TransportFactory], entry_point.load())
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"transport {name!r} is registered as {entry_point.value!r} but cannot be loaded: {exc}"
        ) from exc


def create_transport(settings: Settings) -> Transport:
    """The transport named by ``settings.transport``, built by its ``from_settings``.

    An unknown name (or a broken plugin) raises :class:`ConfigurationError` naming
    the setting, its environment variable and the names that would work.
    """
    name = settings.transport
    factory = transport_class(name)
    if not callable(getattr(factory, "from_settings", None)):
        raise ConfigurationError(
            f"transport {name!r} ({_entry_points()[name].value}) has no from_settings(settings)"
        )
    return cast(Transport, factory.from_settings(settings))
