"""Admin users: created and deleted from the command line (``nurture admin``),
logged in on ``/admin/login``.

* Passwords are hashed with Argon2 (``pwdlib``'s recommended hasher); the
  password itself is never stored or logged.
* **Growing delays.** After :data:`FREE_FAILURES` failed logins in a row, the
  next attempt for that name is refused without checking the password until
  ``2 ** (failures - FREE_FAILURES)`` seconds (at most :data:`MAX_DELAY`)
  have passed since the last failure. A success starts the count again.
  :func:`login_delay` is that rule, also used per client address by the web
  edge, so spraying many names from one address slows down too.
* An unknown name takes as long as a wrong password (a hash is checked
  either way), so the login form does not tell which names exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from pwdlib import PasswordHash
from sqlmodel import Session

from nurture.core.places import check_timezone
from nurture.errors import NurtureError
from nurture.store import admins
from nurture.store.tables import AdminUserRow

__all__ = [
    "FREE_FAILURES",
    "MAX_DELAY",
    "MIN_PASSWORD_LENGTH",
    "AdminUserError",
    "LoginResult",
    "admin_zone",
    "check_zone",
    "create_user",
    "delete_user",
    "list_users",
    "log_out",
    "login",
    "login_delay",
    "session_user",
    "set_zone",
]

FREE_FAILURES = 3
MAX_DELAY = 300.0
MIN_PASSWORD_LENGTH = 10
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}")


class AdminUserError(NurtureError):
    """A refused admin name, password, zone, or no such admin."""


@cache
def _hasher() -> PasswordHash:
    return PasswordHash.recommended()


@cache
def _dummy_hash() -> str:
    return _hasher().hash("not anyone's password, only spends the same time")


def login_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failed logins in a row before the next try."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(MAX_DELAY, float(2 ** min(failures - FREE_FAILURES, 20)))


def check_zone(zone: str) -> str:
    """``zone`` when it is an IANA time zone, else :class:`AdminUserError`.

    The check subscribers and sequence files get (:func:`check_timezone`): a
    lookup in the known names, so a folder of tzdata (``Europe``), a name too
    long for a file, ``localtime`` or ``Factory`` are refused, never opened.
    """
    try:
        return check_timezone(zone)
    except ValueError:
        raise AdminUserError(
            f"{zone[:100]!r} is not a time zone (for example Europe/Stockholm)"
        ) from None


def admin_zone(zone: str) -> ZoneInfo:
    """The zone an admin's pages show times in: UTC for a stored name
    :func:`check_zone` would refuse (one saved before it refused it)."""
    try:
        return ZoneInfo(check_zone(zone))
    except AdminUserError:
        return ZoneInfo("UTC")


def create_user(
    session: Session,
    name: str,
    password: str,
    *,
    now: datetime,
    email: str | None = None,
    zone: str = "UTC",
) -> AdminUserRow:
    """A new admin. Refuses a malformed or taken name and a short password."""
    if not _NAME.fullmatch(name):
        raise AdminUserError(
            "an admin name is 1-100 letters, digits and . _ @ + -, starting with a letter or digit"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AdminUserError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if admins.user_by_name(session, name) is not None:
        raise AdminUserError(f"there is already an admin named {name!r}")
    values = {
        "name": name,
        "email": email.strip() if email else None,
        "password_hash": _hasher().hash(password),
        "zone": check_zone(zone),
        "created_at": now,
        "failed_logins": 0,
        "session_epoch": 0,
    }
    return admins.add_user(session, values)


def delete_user(session: Session, name: str) -> None:
    if not admins.delete_user(session, name):
        raise AdminUserError(f"there is no admin named {name!r}")


def list_users(session: Session) -> list[AdminUserRow]:
    return admins.users(session)


def set_zone(session: Session, user_id: int, zone: str) -> AdminUserRow:
    """Show ``user_id``'s pages in ``zone``."""
    row = admins.user_by_id(session, user_id)
    if row is None:
        raise AdminUserError("no such admin")
    row.zone = check_zone(zone)
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class LoginResult:
    """A login attempt: ``user`` when it succeeded; else ``retry_after`` is how
    many seconds the name must wait (0 when it may try again at once)."""

    user: AdminUserRow | None
    retry_after: float = 0.0


def login(session: Session, name: str, password: str, now: datetime) -> LoginResult:
    """Check ``name``'s password at ``now``, counting failures (the caller commits)."""
    row = admins.user_by_name(session, name) if _NAME.fullmatch(name) else None
    if row is None:
        _hasher().verify(password, _dummy_hash())
        return LoginResult(None)
    if row.last_failed_at is not None:
        wait = row.last_failed_at + timedelta(seconds=login_delay(row.failed_logins)) - now
        if wait > timedelta(0):
            return LoginResult(None, wait.total_seconds())
    valid, new_hash = _hasher().verify_and_update(password, row.password_hash)
    if not valid:
        row.failed_logins += 1
        row.last_failed_at = now
        session.add(row)
        session.flush()
        return LoginResult(None, login_delay(row.failed_logins))
    if new_hash is not None:
        row.password_hash = new_hash
    row.failed_logins = 0
    row.last_failed_at = None
    row.last_login_at = now
    session.add(row)
    session.flush()
    return LoginResult(row)


def log_out(session: Session, user_id: int) -> None:
    """End every session of ``user_id``: sessions carry the epoch they began in."""
    row = admins.user_by_id(session, user_id)
    if row is not None:
        row.session_epoch += 1
        session.add(row)
        session.flush()


def session_user(session: Session, user_id: int, epoch: int) -> AdminUserRow | None:
    """The admin of a session begun in ``epoch``, while it is valid: the admin
    exists and has not logged out since."""
    row = admins.user_by_id(session, user_id)
    if row is None or row.session_epoch != epoch:
        return None
    return row
