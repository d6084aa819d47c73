"""How admin pages are drawn: one Jinja2 environment over
``nurture/web/admin/templates`` (autoescaping on: every value a subscriber or
a marketer wrote is escaped), the shared frame (``base.html``: navigation,
the admin's time zone, logging out), and forms read with a size limit.

A page module renders with :meth:`AdminPages.render`, which adds to its
context ``admin``, ``csrf`` (the token every form carries as a hidden
``csrf`` field) and ``local`` (a datetime shown in the admin's zone).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from fastapi import Request
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from nurture.web.admin.auth import Admin, AdminAuth
from nurture.web.common import read_body

__all__ = ["NO_STORE", "AdminPages", "local_time", "read_form"]

NO_STORE = {"Cache-Control": "no-store"}
"""Admin pages hold subscribers' data: never kept by a browser or proxy cache."""


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_time(moment: datetime | None, zone: str, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    """``moment`` (aware) shown in ``zone``; an empty string for None."""
    if moment is None:
        return ""
    return moment.astimezone(_zone(zone)).strftime(fmt)


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (64 KiB at most): the first value of each field."""
    body = await read_body(request)
    values: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        values.setdefault(key, value)
    return values


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
        self.env.globals["zones"] = sorted(available_timezones())

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
