"""Logging in and out of /admin: the session cookie, CSRF, growing delays."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

from nurture.web.admin.auth import safe_next
from tests.admin_kit import ADMIN, PASSWORD, AdminApp, csrf_of, log_in

NEXT = "/admin/sends?status=failed"


def _login(client: TestClient, name: str, password: str, csrf: str) -> httpx.Response:
    return client.post(
        "/admin/login",
        data={"csrf": csrf, "name": name, "password": password, "next": NEXT},
        follow_redirects=False,
    )


def test_login_sets_a_safe_cookie_and_returns_to_the_page_asked_for(admin: AdminApp) -> None:
    client = admin.anonymous()
    asked = client.get("/admin/login?next=/admin/sends%3Fstatus%3Dfailed")
    answer = _login(client, ADMIN, PASSWORD, csrf_of(asked.text))
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/sends?status=failed"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # base_url is http in the example folder


def test_a_wrong_password_and_an_unknown_name_read_the_same(admin: AdminApp) -> None:
    client = admin.anonymous()
    csrf = csrf_of(client.get("/admin/login").text)
    wrong = _login(client, ADMIN, "not the password", csrf)
    unknown = _login(client, "nobody", "not the password", csrf)
    assert wrong.status_code == unknown.status_code == 401
    assert "do not match" in wrong.text and "do not match" in unknown.text
    assert "set-cookie" not in wrong.headers


def test_repeated_failures_wait_longer_and_longer(admin: AdminApp) -> None:
    client = admin.anonymous()
    csrf = csrf_of(client.get("/admin/login").text)
    codes = [_login(client, ADMIN, f"guess {n} wrong", csrf).status_code for n in range(3)]
    assert codes == [401, 401, 429]
    # The clock has not moved: even the right password is refused now.
    refused = _login(client, ADMIN, PASSWORD, csrf)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "set-cookie" not in refused.headers


def test_a_login_without_the_forms_token_is_refused(admin: AdminApp) -> None:
    client = admin.anonymous()
    answer = _login(client, ADMIN, PASSWORD, "forged")
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


def test_logging_out_ends_the_session_even_for_a_copied_cookie(admin: AdminApp) -> None:
    page = admin.client.get("/admin/login", follow_redirects=False)
    assert page.status_code == 303  # logged in: the login page sends us on
    copied = admin.client.cookies.get("nurture_admin")
    assert copied
    # Without the CSRF token, logging out is refused.
    assert admin.client.post("/admin/logout", data={}).status_code == 403
    csrf = csrf_of(admin.client.get("/admin/account").text)
    gone = admin.client.post("/admin/logout", data={"csrf": csrf}, follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/admin/login"
    thief = admin.anonymous()
    thief.cookies.set("nurture_admin", copied, path="/admin")
    assert thief.get("/admin/account", follow_redirects=False).status_code == 303  # to log in
    log_in(admin.client)  # a new session works again


def test_the_zone_is_chosen_on_the_page_and_checked(admin: AdminApp) -> None:
    csrf = csrf_of(admin.client.get("/admin/account").text)
    bad = admin.client.post("/admin/zone", data={"csrf": csrf, "zone": "Mars/Olympus"})
    assert bad.status_code == 422
    good = admin.client.post(
        "/admin/zone",
        data={"csrf": csrf, "zone": "America/New_York", "next": "/admin/account"},
        follow_redirects=True,
    )
    assert re.search(r'name="zone" value="America/New_York"', good.text)


def test_only_admin_paths_are_followed_after_login() -> None:
    assert safe_next("/admin/sends?x=1") == "/admin/sends?x=1"
    for hostile in ("https://evil.example/admin", "//evil.example/admin", "/other", "/admin\\@x"):
        assert safe_next(hostile) == "/admin"
