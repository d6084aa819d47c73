"""``/admin/login``, ``/admin/logout``, ``/admin/zone`` and ``/admin/account``:
starting and ending an admin's session, the zone their pages show times in,
and the record of what admins did.

Failed logins slow down twice over (:func:`nurture.admin.users.login_delay`):
per admin name (kept in the database, so every web process sees it) and per
client address (kept in this process), so guessing many passwords for one
name, or one password for many names, both wait longer and longer. A refused
attempt answers 429 with ``Retry-After``; the page never says whether the name
exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from nurture.admin import users
from nurture.app.runtime import Runtime
from nurture.store import admins
from nurture.web.admin.auth import Admin, safe_next
from nurture.web.admin.layout import AdminPages, read_form
from nurture.web.common import client_address

__all__ = ["LoginThrottle", "routes"]


@dataclass
class LoginThrottle:
    """Failed logins per client address, in this process."""

    failures: dict[str, tuple[int, datetime]] = field(default_factory=dict)

    def wait(self, address: str, now: datetime) -> float:
        count, last = self.failures.get(address, (0, now))
        return max(0.0, (last + timedelta(seconds=users.login_delay(count)) - now).total_seconds())

    def failed(self, address: str, now: datetime) -> None:
        count, _ = self.failures.get(address, (0, now))
        if len(self.failures) > 10_000:  # a flood of addresses: forget the oldest half
            for key in sorted(self.failures, key=lambda k: self.failures[k][1])[:5_000]:
                del self.failures[key]
        self.failures[address] = (count + 1, now)

    def succeeded(self, address: str) -> None:
        self.failures.pop(address, None)


def routes(runtime: Runtime, pages: AdminPages) -> APIRouter:
    router = APIRouter(prefix="/admin", include_in_schema=False)
    auth = pages.auth
    throttle = LoginThrottle()

    def _login_page(
        request: Request, *, message: str = "", name: str = "", next_: str = "", status: int = 200
    ) -> Response:
        context = {"message": message, "name": name, "next": safe_next(next_)}
        response = pages.render(request, None, "login.html", context, status_code=status)
        return response

    @router.get("/login")
    def login_form(request: Request, next: str = "") -> Response:
        if auth.admin_of(request) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return _login_page(request, next_=next)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await read_form(request)
        name, next_ = form.get("name", "").strip(), form.get("next", "")
        if not auth.csrf_ok(None, form.get("csrf")):
            message = "The form expired. Please log in again."
            return _login_page(request, message=message, name=name, next_=next_, status=403)
        now = runtime.clock()
        address = client_address(request, runtime.settings.trusted_proxies)
        wait = throttle.wait(address, now)
        if wait <= 0:
            result = await run_in_threadpool(_check, name, form.get("password", ""), now)
            wait = result[1]
            if result[0] is not None:
                throttle.succeeded(address)
                admin_id, epoch = result[0]
                redirect = RedirectResponse(safe_next(next_), status_code=303)
                auth.start_session(redirect, admin_id, epoch)
                return redirect
            throttle.failed(address, now)
            wait = max(wait, throttle.wait(address, now))
        if wait > 0:
            seconds = math.ceil(wait)
            response = _login_page(
                request,
                message=f"Too many failed attempts. Try again in {seconds} s.",
                name=name,
                next_=next_,
                status=429,
            )
            response.headers["Retry-After"] = str(seconds)
            return response
        message = "That name and password do not match."
        return _login_page(request, message=message, name=name, next_=next_, status=401)

    def _check(name: str, password: str, now: datetime) -> tuple[tuple[int, int] | None, float]:
        with auth.sessions() as session:
            result = users.login(session, name, password, now)
            session.commit()
            if result.user is None or result.user.id is None:
                return None, result.retry_after
            return (result.user.id, result.user.session_epoch), 0.0

    @router.post("/logout")
    async def logout(request: Request, admin: Admin = Depends(auth.page)) -> Response:
        form = await read_form(request)
        auth.check_csrf(admin, form.get("csrf"))

        def _end() -> None:
            with auth.sessions() as session:
                users.log_out(session, admin.id)
                session.commit()

        await run_in_threadpool(_end)
        response = RedirectResponse("/admin/login", status_code=303)
        auth.end_session(response)
        return response

    @router.get("/account")
    def account(request: Request, admin: Admin = Depends(auth.page)) -> Response:
        """Who is logged in, and the record of what admins did lately."""
        with auth.sessions() as session:
            actions = admins.recent_actions(session, limit=50)
        return pages.render(request, admin, "account.html", {"actions": actions})

    @router.post("/zone")
    async def zone(request: Request, admin: Admin = Depends(auth.page)) -> Response:
        form = await read_form(request)
        auth.check_csrf(admin, form.get("csrf"))

        def _set() -> None:
            with auth.sessions() as session:
                users.set_zone(session, admin.id, form.get("zone", "").strip())
                session.commit()

        try:
            await run_in_threadpool(_set)
        except users.AdminUserError as exc:
            return Response(str(exc), status_code=422, media_type="text/plain")
        return RedirectResponse(safe_next(form.get("next")), status_code=303)

    return router
