"""The admin pages on a phone (390 CSS pixels wide) and a desktop (1280).
Before, a table's cells could break anywhere: on a phone a wide table (the
funnel, the dashboard's rate bars) squeezed every column to a letter a line
("D/e/l/i/v/e/r/e/d") and the page still scrolled sideways past its
fixed-width charts; on a desktop the funnel's headers broke mid-word. Now
headers and figures stay whole, a table too wide for a phone scrolls inside
the page, the charts scale or scroll in their own box, and no page is wider
than the screen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import LogIn

if TYPE_CHECKING:
    from playwright.sync_api import Page

PHONE = {"width": 390, "height": 844}

# For each header and figure cell: how many lines its text takes (the
# distinct tops of its text's boxes) against how many pieces it has that a
# line may end after. A word broken mid-way makes the first the larger.
BROKEN_WORDS = """() => {
  const broken = [];
  for (const cell of document.querySelectorAll("main th, main td.num")) {
    const text = cell.innerText.trim();
    if (!text) continue;
    const range = document.createRange();
    range.selectNodeContents(cell);
    const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
    const words = text.split(/\\s+|(?<=[-/])/).length;  // a line may end after - or /
    if (tops.size > words) broken.push(`${text} (${tops.size} lines)`);
  }
  return broken;
}"""


PAGES = ["/admin", "/admin/sends", "/admin/subscribers", "/admin/sequences",
         "/admin/sequences/sales-process", "/admin/problems", "/admin/account"]  # fmt: skip


def _first_link(page: Page, pattern: str) -> str:
    """The first link on the page whose address matches ``pattern``."""
    found: str | None = page.evaluate(
        "p => [...document.querySelectorAll('main a')].map(a => a.getAttribute('href'))"
        ".find(h => new RegExp(p).test(h || '')) || null",
        pattern,
    )
    assert found is not None, f"no link like {pattern} on {page.url}"
    return found


def _visit_all(page: Page, width: int) -> list[str]:
    """Every admin page at ``width``: none wider than the screen, no header
    or figure broken mid-word. Returns the paths checked."""
    page.set_viewport_size({"width": width, "height": 900})
    page.goto("/admin/sends")
    one_send = _first_link(page, r"^/admin/sends/\d+$")
    page.goto("/admin/subscribers")
    one_subscriber = _first_link(page, r"^/admin/subscribers/\d+$")
    checked = []
    for path in [*PAGES, one_send, one_subscriber]:
        page.goto(path)
        wide = page.evaluate("document.documentElement.scrollWidth")
        assert wide <= width, f"{path} is {wide}px wide on a {width}px screen"
        assert page.evaluate(BROKEN_WORDS) == [], f"{path} at {width}px"
        checked.append(path)
    return checked


PAGES_BUILT = pytest.mark.admin_pages(
    "/admin", "/admin/sequences/{sequence_id}", "/admin/sends/{id}", "/admin/subscribers/{id}"
)


@PAGES_BUILT
def test_admin_pages_fit_a_phone_with_words_whole(page: Page, log_in: LogIn) -> None:
    log_in(then="/admin")
    assert len(_visit_all(page, PHONE["width"])) == len(PAGES) + 2
    # The funnel's table is wider than the phone: it scrolls in its own box.
    page.goto("/admin/sequences/sales-process")
    table = page.locator("main table").first
    assert table.evaluate("t => t.scrollWidth > t.clientWidth"), "the funnel table fits?"
    assert table.evaluate("t => getComputedStyle(t).overflowX") == "auto"


@PAGES_BUILT
def test_on_a_desktop_headers_keep_their_words_whole(page: Page, log_in: LogIn) -> None:
    """At 1280 pixels the funnel's eleven columns broke "Sent" into "Sen/t"
    and "Conversions" into "Conversio/ns": cells could break anywhere."""
    log_in(then="/admin")
    assert len(_visit_all(page, 1280)) == len(PAGES) + 2
    page.goto("/admin/sequences/sales-process")
    table = page.locator("main table").first
    assert table.evaluate("t => t.scrollWidth <= t.clientWidth"), "the funnel fits a desktop"
