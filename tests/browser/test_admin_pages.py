"""The admin pages in a real browser: the send log and its filters, a send's
detail, a subscriber's explain view, a sequence's funnel, the dashboard.

Written against the addresses of issue 11 and the labels a person reads
("Status", "Apply", a link per send row); each test skips while its page is
not in the app's route table (``admin_pages`` marker, see conftest).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import HOSTILE, PEOPLE, LogIn, Site, sync_api

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

expect = sync_api().expect


def _rows(page: Page) -> Locator:
    """The data rows of the page's main table (not its header row)."""
    return page.locator("main table tbody tr")


def _choose(field: Locator, value: str) -> None:
    """Pick ``value`` in a select, or type it in an input."""
    if field.evaluate("node => node.tagName") == "SELECT":
        field.select_option(value)
    else:
        field.fill(value)


def _cell(table: Locator, row: Locator, header: str) -> Locator:
    """The cell of ``row`` under the column headed ``header`` in ``table``."""
    headers = [text.strip() for text in table.locator("thead th").all_inner_texts()]
    return row.locator("th, td").nth(headers.index(header))


def _apply(page: Page) -> None:
    page.get_by_role("button", name=re.compile(r"^(Apply|Filter|Search|Show)", re.I)).click()


@pytest.mark.admin_pages("/admin/sends")
def test_filter_the_send_log_by_status(page: Page, log_in: LogIn, site: Site) -> None:
    log_in(then="/admin/sends")
    expect(_rows(page)).to_have_count(len(PEOPLE))
    for address in PEOPLE:
        expect(_rows(page).filter(has_text=address)).to_have_count(1)
    # Times in ana's zone: the sends were decided at 14:30 UTC, 15:30 in Stockholm.
    expect(_rows(page).first).to_contain_text("15:30")

    [failed] = site.having("failed")
    _choose(page.get_by_label("Status"), "failed")
    _apply(page)
    expect(page).to_have_url(re.compile(r"/admin/sends\?(.*&)?status=failed"))
    expect(_rows(page)).to_have_count(1)
    expect(_rows(page)).to_contain_text(failed)

    # A hostile filter value is a value: it finds nothing, not everything.
    page.goto("/admin/sends")
    page.get_by_label(re.compile(r"address|e-?mail", re.I)).first.fill("' OR 1=1 --")
    _apply(page)
    expect(page).to_have_url(re.compile(r"OR"))
    expect(_rows(page).filter(has_text="@example.com")).to_have_count(0)


@pytest.mark.admin_pages("/admin/sends", "/admin/sends/{id}")
def test_open_a_send_from_the_log(page: Page, log_in: LogIn, site: Site) -> None:
    address, name = site.person()
    log_in(then="/admin/sends")
    _rows(page).filter(has_text=address).get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(r"/admin/sends/\d+$"))
    main = page.locator("main")
    expect(main).to_contain_text(f"Welcome, {name.split()[0]}!")  # the first step's subject
    expect(main).to_contain_text(address)
    expect(main).to_contain_text("sent")
    # The HTML part is shown in a sandboxed frame: it cannot run scripts.
    frame = page.locator("iframe")
    if frame.count():
        sandbox = frame.first.get_attribute("sandbox")
        assert sandbox is not None and "allow-scripts" not in sandbox


@pytest.mark.admin_pages("/admin/subscribers", "/admin/subscribers/{id}")
def test_open_a_subscribers_explain_view(page: Page, log_in: LogIn, site: Site) -> None:
    address, name = site.person()
    log_in(then="/admin/subscribers")
    search = page.get_by_role("searchbox").or_(
        page.get_by_label(re.compile(r"search|e-?mail|address", re.I))
    )
    search.first.fill(address)
    _apply(page)
    page.get_by_role("link", name=re.compile(f"{re.escape(address)}|{name}")).first.click()
    expect(page).to_have_url(re.compile(r"/admin/subscribers/\d+$"))
    main = page.locator("main")
    expect(main).to_contain_text(name)
    expect(main).to_contain_text("sales-process")
    # The explain timeline: the first step went out, the next one waits.
    steps = main.locator("table tbody tr")
    expect(steps.filter(has_text="welcome").first).to_contain_text(re.compile(r"\bsent\b"))
    expect(steps.filter(has_text="three-models").first).to_contain_text(
        re.compile(r"pending|waiting|held|would send", re.I)
    )


@pytest.mark.admin_pages("/admin/sequences", "/admin/sequences/{id}")
def test_read_a_sequences_funnel(page: Page, log_in: LogIn) -> None:
    log_in(then="/admin/sequences")
    page.get_by_role("link", name=re.compile("sales-process|Sales process", re.I)).first.click()
    expect(page).to_have_url(re.compile(r"/admin/sequences/sales-process$"))
    funnel = page.locator("main table").filter(
        has=page.get_by_role("columnheader", name="Sent", exact=True)
    )
    welcome = funnel.first.locator("tbody tr").filter(has_text="welcome").first
    # Three accepted by the provider; the unknown one apart, the refused one in neither.
    expect(_cell(funnel.first, welcome, "Sent")).to_have_text(re.compile(r"^\s*3\s*$"))
    if funnel.first.get_by_role("columnheader", name="Unknown", exact=True).count():
        expect(_cell(funnel.first, welcome, "Unknown")).to_have_text(re.compile(r"^\s*1\s*$"))
    # The one purchase, credited to the welcome email, in its currency.
    expect(welcome).to_contain_text(re.compile(r"4[\s,.\u00a0\u202f]?900"))
    expect(welcome).to_contain_text("SEK")
    expect(page.locator("main svg").first).to_be_visible()  # the funnel, drawn


@pytest.mark.admin_pages("/admin/sends", "/admin/sends/{id}")
def test_a_subscribers_script_never_runs_on_a_page(page: Page, log_in: LogIn, site: Site) -> None:
    """The page fixture fails the test on any alert(); here every page that
    shows the hostile subscriber is opened, and their name is read as text."""
    log_in(then="/admin/sends")
    row = _rows(page).filter(has_text="hostile@example.com")
    expect(row).to_contain_text(HOSTILE)  # shown as text, not run
    row.get_by_role("link").first.click()
    expect(page.locator("main")).to_contain_text(HOSTILE)
    others = {
        "/admin": "/admin",
        "/admin/subscribers": "/admin/subscribers?q=hostile",
        "/admin/problems": "/admin/problems",
        "/admin/sequences/{sequence_id}": "/admin/sequences/sales-process",
    }
    for route, path in others.items():
        if site.serves(route):
            page.goto(path)
            expect(page.locator("main")).to_be_visible()
    if site.serves("/admin/subscribers"):
        page.goto("/admin/subscribers?q=hostile")
        page.get_by_role("link", name="hostile@example.com").click()
        expect(page.locator("main")).to_contain_text(HOSTILE)
