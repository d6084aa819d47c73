"""Who is asking: the admin session of the pages and the admin token of the API.

* **Session.** Logging in on ``/admin/login`` sets the cookie :data:`COOKIE`:
  a signed token (purpose :data:`nurture.core.tokens.ADMIN_SESSION`) naming
  the admin and the session epoch it began in. It is HttpOnly, SameSite=Lax,
  Secure when ``base_url`` is https, and lasts :data:`SESSION_MAX_AGE`.
  Logging out raises the admin's epoch, which ends all their sessions;
  deleting the admin ends them too.
* **Pages** depend on :meth:`AdminAuth.page`. Without a valid session, a GET
  is redirected (303) to the login page, which comes back afterwards; any
  other method gets 403.
* **CSRF.** Every form carries :meth:`AdminAuth.csrf_token`, a signed token
  bound to the session; :meth:`AdminAuth.check_csrf` refuses (403) a post
  without the right one.
* **The JSON API** under ``/admin/api`` depends on :meth:`AdminAuth.api`: an
  ``Authorization: Bearer`` token of scope ``admin`` (``nurture tokens create
  NAME --scope admin``), else 401 (403 for an ``ingest`` token).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, urlsplit

from fastapi import HTTPException, Request
from starlette.responses import Response

from nurture.admin import users
from nurture.app.runtime import Runtime
from nurture.audience.tokens import Scope, allows, authenticate
from nurture.core import tokens
from nurture.store.db import session_factory
from nurture.store.ids import MAX_ID

__all__ = ["COOKIE", "SESSION_MAX_AGE", "Admin", "AdminAuth", "safe_next"]

COOKIE = "nurture_admin"
SESSION_MAX_AGE = timedelta(hours=12)
LOGIN_CSRF_MAX_AGE = timedelta(hours=1)


@dataclass(frozen=True)
class Admin:
    """The logged-in admin of one request."""

    id: int
    name: str
    email: str | None
    zone: str
    epoch: int


def safe_next(target: str | None) -> str:
    """Where to go after logging in: only a path of this app's ``/admin``."""
    if not target:
        return "/admin"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin") or "\\" in target:
        return "/admin"
    return target


class AdminAuth:
    """Sessions, CSRF tokens and API tokens over one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sessions = session_factory(runtime.engine)
        self.secure = runtime.settings.base_url.startswith("https://")

    def _keys(self) -> list[str]:
        return self.runtime.settings.secret_keys

    # ----------------------------------------------------------------- sessions

    def admin_of(self, request: Request) -> Admin | None:
        """The admin whose valid session cookie ``request`` carries, or None."""
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        now = self.runtime.clock()
        payload = tokens.verify(
            self._keys(), tokens.ADMIN_SESSION, cookie, now=now, max_age=SESSION_MAX_AGE
        )
        if payload is None:
            return None
        user_id, epoch = payload.get("u"), payload.get("e")
        # Signed, but still read like input: a bool is an int, and a number no
        # id column holds would fail the query (a 500) instead of finding no one.
        if type(user_id) is not int or type(epoch) is not int:
            return None
        if not (0 < user_id <= MAX_ID and 0 <= epoch <= MAX_ID):
            return None
        with self.sessions() as session:
            row = users.session_user(session, user_id, epoch)
            if row is None or row.id is None:
                return None
            return Admin(row.id, row.name, row.email, row.zone, row.session_epoch)

    def page(self, request: Request) -> Admin:
        """The dependency of every page: the admin, else off to the login page."""
        admin = self.admin_of(request)
        if admin is not None:
            return admin
        if request.method in ("GET", "HEAD"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            location = "/admin/login?next=" + quote(target, safe="/")
            raise HTTPException(303, "log in first", headers={"Location": location})
        raise HTTPException(403, "log in first")

    def start_session(self, response: Response, admin_id: int, epoch: int) -> None:
        value = tokens.sign(
            self._keys(),
            tokens.ADMIN_SESSION,
            {"u": admin_id, "e": epoch},
            now=self.runtime.clock(),
        )
        response.set_cookie(
            COOKIE,
            value,
            max_age=int(SESSION_MAX_AGE.total_seconds()),
            path="/admin",
            httponly=True,
            samesite="lax",
            secure=self.secure,
        )

    def end_session(self, response: Response) -> None:
        response.delete_cookie(
            COOKIE, path="/admin", httponly=True, samesite="lax", secure=self.secure
        )

    # --------------------------------------------------------------------- CSRF

    def csrf_token(self, admin: Admin | None) -> str:
        """The token the forms of ``admin``'s pages carry (``None``: the login form)."""
        bound = {"u": None, "e": None} if admin is None else {"u": admin.id, "e": admin.epoch}
        return tokens.sign(self._keys(), tokens.ADMIN_CSRF, bound, now=self.runtime.clock())

    def csrf_ok(self, admin: Admin | None, token: str | None) -> bool:
        if not token:
            return False
        max_age = SESSION_MAX_AGE if admin is not None else LOGIN_CSRF_MAX_AGE
        payload = tokens.verify(
            self._keys(), tokens.ADMIN_CSRF, token, now=self.runtime.clock(), max_age=max_age
        )
        if payload is None:
            return False
        if admin is None:
            return payload.get("u") is None
        return payload.get("u") == admin.id and payload.get("e") == admin.epoch

    def check_csrf(self, admin: Admin | None, token: str | None) -> None:
        """403 unless ``token`` is this session's CSRF token."""
        if not self.csrf_ok(admin, token):
            raise HTTPException(403, "the form has expired or did not come from this site")

    # ---------------------------------------------------------------------- API

    def api(self, request: Request) -> str:
        """The dependency of every ``/admin/api`` route: an admin token's name, else 401/403."""
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise HTTPException(
                401, "send Authorization: Bearer <admin token>", {"WWW-Authenticate": "Bearer"}
            )
        with self.sessions() as session:
            row = authenticate(session, presented.strip(), self.runtime.clock())
            if row is None:
                raise HTTPException(
                    401,
                    "unknown or revoked token",
                    {"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            if not allows(row.scope, Scope.ADMIN):
                raise HTTPException(403, f"this token's scope is {row.scope}; this needs admin")
            session.commit()  # authenticate() notes when the token was last used
            return row.name
