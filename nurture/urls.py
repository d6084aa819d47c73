"""The two addresses nurture is configured with, checked by their shape:
``base_url`` (every link in an email is built under it) and ``database_url``.

A leaf module (the standard library only): the settings read it without
SQLAlchemy (see :mod:`nurture.cli.main`), and the store names the same
databases when it connects (:func:`nurture.store.db.read_database_url`).
"""

from __future__ import annotations

import re
from contextlib import suppress
from ipaddress import ip_address
from urllib.parse import urlsplit

DATABASES = ("sqlite", "postgresql")
DATABASE_EXAMPLES = "e.g. sqlite:///nurture.db or postgresql+psycopg://user:password@host/nurture"
# Characters that may not appear in a URL as they are (RFC 3986): whitespace,
# controls, and the delimiters that end a URL in text and headers.
_NOT_IN_URL = re.compile(r'[\x00-\x20\x7f-\x9f<>"{}|\\^`\s\u200b-\u200f\u202a-\u202e\u2066-\u2069]')


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a well-formed absolute http(s) address to put links
    under, or None. The links are ``url`` plus a path (``/unsubscribe/...``):
    a path prefix is fine; a query, a fragment or a user name would end up in
    the middle of every link."""
    if not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    bad = _NOT_IN_URL.search(url)
    if bad is not None:
        shown = repr(bad.group())
        return f'must not contain spaces, control characters or any of <>"{{}}|\\^` (found {shown})'
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        return f"is not a valid URL: {exc}"
    if not host:
        return "has no host name after the // (e.g. https://mail.example.com)"
    if parts.username is not None or parts.password is not None:
        return "must not contain a user name or password (user@host)"
    if parts.query or url.endswith("?"):
        return "must not have a query (?...): links are built by adding a path to it"
    if parts.fragment or "#" in url:
        return "must not have a fragment (#...): links are built by adding a path to it"
    return None


def database_url_problem(url: str) -> str | None:
    """Why nurture cannot keep its data at ``url``, or None. Only the shape is
    checked here (SQLAlchemy is not imported to read settings, see
    :mod:`nurture.cli.main`); the store reads the URL itself when it connects
    (:func:`nurture.store.db.make_engine`). Never quotes ``url``: it may hold a
    password."""
    if not url:
        return f"is empty: name the database, {DATABASE_EXAMPLES}"
    scheme = re.match(r"([\w+]+)://", url)
    if scheme is None:
        return f"is not a database URL (no name://): {DATABASE_EXAMPLES}"
    backend = scheme.group(1).partition("+")[0].lower()
    if backend not in DATABASES:
        hint = " (write postgresql+psycopg://)" if backend in ("postgres", "psql", "pg") else ""
        return (
            f"unsupported database {backend!r}{hint}: nurture runs on SQLite and "
            f"PostgreSQL, {DATABASE_EXAMPLES}"
        )
    if backend == "sqlite" and sqlite_in_memory(url):
        return (
            "is an in-memory SQLite database, which is gone when the command exits: "
            "every command would lose its writes; name a file instead, e.g. sqlite:///nurture.db"
        )
    return None


def sqlite_in_memory(url: str) -> bool:
    """Whether the SQLite URL ``url`` names an in-memory database: ``sqlite://``,
    ``sqlite:///:memory:``, or an SQLite URI ``file::memory:`` or with
    ``mode=memory``."""
    rest = url.partition("://")[2]
    location, _, query = rest.partition("?")
    database = location.partition("/")[2]
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return True
    parameters = [part.lower() for part in re.split(r"[?&]", f"{database}?{query}")]
    return database.startswith("file:") and "mode=memory" in parameters


def base_url_problem(base_url: str) -> str | None:
    """Why subscribers could not use links to ``base_url``, or None when it is public https.

    Unsubscribe links and RFC 8058's one-click ``List-Unsubscribe`` (which a
    mail provider POSTs to, and which Gmail and Yahoo only honour over https)
    need an address the whole internet reaches. ``http://localhost:8000`` is
    fine for the outbox, never for a real provider.
    """
    try:
        parts = urlsplit(base_url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return "is not a valid URL"
    if host == "localhost" or host.endswith(".localhost"):
        return "points at localhost"
    with suppress(ValueError):
        address = ip_address(host)
        if address.is_loopback or address.is_unspecified:
            return "points at this machine"
    if parts.scheme != "https":
        return "is not https://"
    return None
