"""Resolving an ``unknown`` send on the problems page, in a real browser.

It changes the ledger of the shared site, so it runs last (the file sorts
after the other page tests) and no other test relies on the send staying
``unknown`` afterwards.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import LogIn, Site, sync_api

if TYPE_CHECKING:
    from playwright.sync_api import Page

expect = sync_api().expect


@pytest.mark.admin_pages("/admin/problems")
def test_resolve_an_unknown_send_as_sent(page: Page, log_in: LogIn, site: Site) -> None:
    [failed], [address] = site.having("failed"), site.having("unknown")
    log_in(then="/admin/problems")
    rows = page.locator("main table tbody tr")
    expect(rows.filter(has_text=failed)).to_have_count(1)  # failed sends are listed too
    unknown = rows.filter(has_text=address)
    expect(unknown).to_have_count(1)
    expect(unknown).to_contain_text("unknown")
    reason = unknown.get_by_label(re.compile(r"why|reason|note", re.I))
    if reason.count():
        reason.first.fill("found in SendGrid's activity feed")
    unknown.get_by_role("button", name="Mark as sent").click()

    expect(page).to_have_url(re.compile(r"/admin/problems"))
    expect(page.locator("main table tbody tr").filter(has_text=address)).to_have_count(0)
    # Recorded: who did it, on which send.
    page.goto("/admin/account")
    done = page.locator("main table tbody tr").filter(has_text="ana").first
    expect(done).to_contain_text(re.compile(r"sent|resolve", re.I))
