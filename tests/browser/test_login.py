"""Logging in, out, and choosing the zone, in a real browser on the real app."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tests.browser.conftest import PASSWORD, LogIn, sync_api

if TYPE_CHECKING:
    from playwright.sync_api import Page

expect = sync_api().expect


def test_log_in_through_the_form_after_a_wrong_password(page: Page) -> None:
    page.goto("/admin/account")
    expect(page).to_have_url(re.compile(r"/admin/login\?next=/admin/account$"))
    page.get_by_label("Name").fill("ana")
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That name and password do not match.")
    expect(page.get_by_label("Name")).to_have_value("ana")  # kept; the password is not
    expect(page.get_by_label("Password")).to_have_value("")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/admin/account$"))  # back to the page asked for
    expect(page.get_by_role("heading", level=1)).to_have_text("ana")
    expect(page.get_by_role("navigation", name="Admin")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "nurture_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/admin"


def test_log_out_ends_the_session(page: Page, log_in: LogIn) -> None:
    log_in("ana")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/admin/login$"))
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    page.goto("/admin/account")
    expect(page).to_have_url(re.compile(r"/admin/login\?next=/admin/account$"))


def test_the_time_zone_is_chosen_in_the_page_frame(page: Page, log_in: LogIn) -> None:
    log_in("bo")  # bo's pages show UTC
    zone = page.get_by_label("Times in")
    expect(zone).to_have_value("UTC")
    zone.fill("America/New_York")
    page.get_by_role("button", name="Set").click()
    expect(page).to_have_url(re.compile(r"/admin/account$"))  # the same page, again
    expect(page.get_by_label("Times in")).to_have_value("America/New_York")
    expect(page.locator("dd", has_text="America/New_York")).to_be_visible()
    page.reload()  # kept in the database, not only in this page
    expect(page.get_by_label("Times in")).to_have_value("America/New_York")
