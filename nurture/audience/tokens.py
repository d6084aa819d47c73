"""API tokens: who may call ``/api/v1`` and for what.

A token is ``nrt_`` and 43 random URL-safe characters (``secrets.token_urlsafe(32)``,
256 bits). It is shown once, when created; the database keeps only its SHA-256
(hex), so a copy of the database lets nobody call the API. A request's token is
found by the hash of what it presents: a lookup on a unique index, never a
comparison of secrets character by character, so timing tells an attacker
nothing about a stored token.

Scopes: ``ingest`` may post subscribers and events; ``admin`` may do that and
whatever admin endpoints come later (:func:`allows`).

Every function flushes but does not commit: the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from nurture.errors import NurtureError
from nurture.store import api as store
from nurture.store.tables import ApiTokenRow

__all__ = [
    "TOKEN_PREFIX",
    "NewToken",
    "Scope",
    "TokenError",
    "allows",
    "authenticate",
    "create_token",
    "hash_token",
    "list_tokens",
    "revoke_token",
]

TOKEN_PREFIX = "nrt_"
"""Every token starts with this, so a leaked one is recognisable (secret scanners)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class Scope(StrEnum):
    INGEST = "ingest"
    ADMIN = "admin"


class TokenError(NurtureError):
    """A token cannot be created or revoked (bad or taken name, unknown scope, none such)."""


@dataclass(frozen=True)
class NewToken:
    """A token just created: ``token`` is the secret, shown this once."""

    name: str
    scope: Scope
    token: str


def hash_token(token: str) -> str:
    """The SHA-256 (hex) stored for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def allows(granted: str, needed: Scope) -> bool:
    """Whether a token of scope ``granted`` may do what needs ``needed``."""
    return granted == Scope.ADMIN or granted == needed


def create_token(session: Session, name: str, scope: str, now: datetime) -> NewToken:
    """Create a token called ``name``; raises :class:`TokenError` for a bad or taken name."""
    if not _NAME.match(name):
        raise TokenError(
            f"token name {name[:100]!r} must be 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    try:
        granted = Scope(scope)
    except ValueError:
        raise TokenError(f"scope must be one of {', '.join(Scope)}, not {scope[:50]!r}") from None
    if store.token_by_name(session, name) is not None:
        raise TokenError(f"a token called {name!r} exists; revoke it first or pick another name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    values = {"name": name, "token_hash": hash_token(token), "scope": granted, "created_at": now}
    try:
        with session.begin_nested():
            store.add_token(session, values)
    except IntegrityError:  # created by someone else in the meantime
        raise TokenError(f"a token called {name!r} exists") from None
    return NewToken(name, granted, token)


def list_tokens(session: Session) -> list[ApiTokenRow]:
    """Every token (name, scope, created, last used; the hash is never shown)."""
    return store.tokens(session)


def revoke_token(session: Session, name: str) -> None:
    """Delete the token called ``name``: it stops working at once."""
    if not store.delete_token(session, name):
        raise TokenError(f"no token called {name[:100]!r}")


def authenticate(session: Session, presented: str, now: datetime) -> ApiTokenRow | None:
    """The token row for the secret ``presented``, its ``last_used_at`` set to
    ``now``; None for an unknown (or revoked) token."""
    if not presented.startswith(TOKEN_PREFIX) or len(presented) > 200:
        return None
    row = store.token_by_hash(session, hash_token(presented))
    if row is None:
        return None
    row.last_used_at = now
    session.flush()
    return row
