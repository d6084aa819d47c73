"""Where a person is and what they read: the one time zone check and the one
locale check.

Sequence files, subscribers (added by hand, imported, from a form) and
``nurture simulate --tz`` all accept the same names and refuse the rest with
the same message. Both checks raise :class:`ValueError`, which pydantic turns
into a field error and the audience service into its own refusal.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

__all__ = ["check_locale", "check_timezone", "known_timezones", "timezone_warning"]

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


# IANA names that look like US time zones but are fixed offsets: "EST" is
# UTC-5 all year, while New York is UTC-4 from March to November. The
# POSIX-style names (EST5EDT, PST8PDT...) do follow US daylight saving, so they
# are left alone.
_FIXED_LOOKALIKES = {
    "EST": "America/New_York",
    "MST": "America/Denver (or America/Phoenix, which keeps UTC-7 all year)",
    "HST": "Pacific/Honolulu",
}


def timezone_warning(name: str) -> str | None:
    """Why a valid zone name is probably not what its writer meant, or None.

    ``EST``, ``MST`` and ``HST`` are fixed offsets without daylight saving
    (checked against the installed tzdata, so a future tzdata that turns them
    into links to a city silences the warning)."""
    suggestion = _FIXED_LOOKALIKES.get(name)
    if suggestion is None or name not in known_timezones():
        return None
    zone = ZoneInfo(name)
    winter = datetime(2026, 1, 15, 12, tzinfo=zone).utcoffset()
    summer = datetime(2026, 7, 15, 12, tzinfo=zone).utcoffset()
    if winter != summer or winter is None:
        return None
    hours = int(winter.total_seconds() // 3600)
    return (
        f"timezone {name!r} is a fixed UTC{hours:+d} offset that never changes for "
        f"daylight saving time, so in summer emails go out an hour off local time "
        f"wherever clocks change: use a place name such as {suggestion}"
    )
