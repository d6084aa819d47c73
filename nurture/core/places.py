"""Where a person is and what they read: the one time zone check and the one
locale check.

Sequence files, subscribers (added by hand, imported, from a form) and
``nurture simulate --tz`` all accept the same names and refuse the rest with
the same message. Both checks raise :class:`ValueError`, which pydantic turns
into a field error and the audience service into its own refusal.
"""

from __future__ import annotations

from functools import cache
from zoneinfo import available_timezones

__all__ = ["check_locale", "check_timezone", "known_timezones"]

# Files of the system's zoneinfo folder that ``ZoneInfo()`` opens but that name
# no place: "localtime" is whatever the machine is set to (it differs from
# server to server), "posixrules" is a template for POSIX TZ strings, and
# "Factory" is tzdata's placeholder for "not set yet".
_NOT_PLACES = frozenset({"localtime", "posixrules", "Factory"})


@cache
def known_timezones() -> frozenset[str]:
    """The IANA zone names we accept.

    Cached: ``available_timezones()`` walks the tzdata files, tens of
    milliseconds, too slow to repeat for every row of an import.
    """
    return frozenset(available_timezones()) - _NOT_PLACES


@cache
def _by_lower() -> dict[str, str]:
    return {zone.lower(): zone for zone in known_timezones()}


def check_timezone(name: str) -> str:
    """``name`` when it is an IANA zone name (``Europe/Stockholm``), else ValueError.

    Case matters (``ZoneInfo`` on a case-insensitive file system would accept
    ``europe/stockholm`` and then fail elsewhere), so a near miss gets a hint.
    """
    if name in known_timezones():
        return name
    near = _by_lower().get(name.lower())
    hint = f"did you mean {near!r}?" if near else "use an IANA name such as Europe/Stockholm"
    raise ValueError(f"unknown time zone {name!r} ({hint})")


def check_locale(tag: str) -> str:
    """``tag`` as a BCP 47 tag (``sv_se`` -> ``sv-SE``) when Babel knows it, else ValueError."""
    # Imported here: Babel loads its locale data index on import, which commands
    # that never see a locale (dispatch, list) should not pay for.
    from babel import Locale, UnknownLocaleError

    try:
        parsed = Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown locale {tag!r} (e.g. sv, en-GB)") from exc
    return str(parsed).replace("_", "-")
