"""The admin side of the web app: pages under ``/admin`` (a logged-in admin,
:mod:`nurture.web.admin.auth`) and JSON under ``/admin/api`` (an admin token).

Each part is one module with ``routes(runtime, pages) -> APIRouter``, included
below; they share one :class:`~nurture.web.admin.layout.AdminPages` (and its
:class:`~nurture.web.admin.auth.AdminAuth`).
"""

from __future__ import annotations

from fastapi import APIRouter

from nurture.app.runtime import Runtime
from nurture.web.admin import dashboard, problems, sends, sequences, session
from nurture.web.admin import subscribers as subscriber_pages
from nurture.web.admin.auth import AdminAuth
from nurture.web.admin.layout import AdminPages

__all__ = ["routes"]


def routes(runtime: Runtime) -> APIRouter:
    """Every ``/admin`` route over ``runtime``."""
    pages = AdminPages(AdminAuth(runtime))
    router = APIRouter()
    router.include_router(session.routes(runtime, pages))
    router.include_router(dashboard.routes(runtime, pages))
    router.include_router(problems.routes(runtime, pages))
    router.include_router(sequences.routes(runtime, pages))
    router.include_router(subscriber_pages.routes(runtime, pages))
    router.include_router(sends.routes(runtime, pages))
    return router
