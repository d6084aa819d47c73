"""How admin pages are drawn: one Jinja2 environment over
``nurture/web/admin/templates`` (autoescaping on: every value a subscriber or
a marketer wrote is escaped), the shared frame (``base.html``: navigation,
the admin's time zone, logging out), and forms read with a size limit.

A page module renders with :meth:`AdminPages.render`, which adds to its
context ``admin``, ``csrf`` (the token every form carries as a hidden
``csrf`` field) and ``local`` (a datetime shown in the admin's zone).

Every route with an id in its path reads it with :func:`subscriber_in_path`
or :func:`send_in_path` (declared after the admin or token dependency, so an
unknown caller is turned away first): a 404 for anything that is not an id a
row can have, which never reaches the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException, Path, Request
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from nurture.admin.users import admin_zone
from nurture.core.places import known_timezones
from nurture.store.ids import MAX_ID, parse_id
from nurture.web.admin.auth import Admin, AdminAuth
from nurture.web.common import read_body

__all__ = [
    "NO_STORE",
    "AdminPages",
    "local_time",
    "read_form",
    "send_in_path",
    "subscriber_in_path",
]

NO_STORE = {"Cache-Control": "no-store"}
"""Admin pages hold subscribers' data: never kept by a browser or proxy cache."""


def local_time(moment: datetime | None, zone: str, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    """``moment`` (aware) shown in ``zone``; an empty string for None."""
    if moment is None:
        return ""
    return moment.astimezone(admin_zone(zone)).strftime(fmt)


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (64 KiB at most): the first value of each field."""
    body = await read_body(request)
    values: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        values.setdefault(key, value)
    return values


def _row_id(text: str, missing: str) -> int:
    found = parse_id(text)
    if found is None:
        # A 404 like any id no row has (not a 422): the path names nothing.
        raise HTTPException(404, missing)
    return found


# Read as text, so that no number is refused with a 422 before it is checked.
_ID_DOC = f"an id: digits, 1 to {MAX_ID} (anything else is a 404)"


def subscriber_in_path(subscriber_id: str = Path(description=_ID_DOC)) -> int:
    """The dependency of a route with ``{subscriber_id}``: the id, or 404."""
    return _row_id(subscriber_id, "no such subscriber")


def send_in_path(send_id: str = Path(description=_ID_DOC)) -> int:
    """The dependency of a route with ``{send_id}``: the id, or 404."""
    return _row_id(send_id, "no such send")


class AdminPages:
    """Renders admin pages over one runtime's :class:`AdminAuth`."""

    def __init__(self, auth: AdminAuth) -> None:
        self.auth = auth
        self.env = Environment(
            loader=PackageLoader("nurture.web.admin", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # The names POST /admin/zone accepts (no "localtime", "Factory"...).
        self.env.globals["zones"] = sorted(known_timezones())

    def render(
        self,
        request: Request,
        admin: Admin | None,
        template: str,
        context: Mapping[str, Any] | None = None,
        *,
        status_code: int = 200,
    ) -> HTMLResponse:
        zone = admin.zone if admin is not None else "UTC"

        def local(moment: datetime | None, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
            return local_time(moment, zone, fmt)

        values = {
            "admin": admin,
            "csrf": self.auth.csrf_token(admin),
            "local": local,
            "path": request.url.path,
            "request_url": str(request.url.path)
            + (f"?{request.url.query}" if request.url.query else ""),
            **(context or {}),
        }
        html = self.env.get_template(template).render(values)
        return HTMLResponse(html, status_code=status_code, headers=NO_STORE)
