"""The browser tests' world: a real ``nurture web`` over a SQLite file, seeded
with real commands, driven by Playwright in headless Chromium.

* **The browser** is the system's Chromium (Debian's ``chromium`` package),
  found on ``PATH`` as ``chromium`` or ``chromium-browser``; Playwright's own
  downloaded browsers are never used. Without one (or without the
  ``playwright`` package) the tests skip with the reason, unless
  ``NURTURE_REQUIRE_BROWSER=1`` (set by ``.ci/run``): then they fail.
* **The site** (one per session, to keep the suite fast): ``nurture init``'s
  folder with the example sequence on, the admins ``ana`` and ``bo`` made with
  ``nurture admin create-user`` (password on standard input), subscribers
  imported with ``nurture subscribers import`` and sent to by ``nurture
  dispatch`` through a (fake) SendGrid that refuses one send (``failed``),
  never answers another (``unknown``) and accepts three (``sent``); which
  subscriber gets which is up to the dispatcher's order, so tests ask
  :meth:`Site.having` rather than assume. One of the three buys
  (``nurture events add purchase``). ``nurture web`` then
  serves it on a free loopback port at the fixed time :data:`NOW`.
* **Pages not built yet.** Tests marked ``admin_pages("/admin/x", ...)``
  skip while a path they need is not in the app's route table.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from sqlalchemy import text

from nurture.admin.users import create_user
from nurture.app.clock import FixedClock
from nurture.app.runtime import build_runtime
from nurture.app.settings import load_settings
from nurture.store.db import make_engine, session_factory
from nurture.store.migrate import upgrade
from nurture.testing import MemoryTransport
from nurture.testing.fake_sendgrid import FakeSendGrid
from nurture.web.app import create_app
from tests.admin_kit import route_table
from tests.e2e.folders import PUBLIC_BASE_URL, enable_example
from tests.e2e.test_cli_engine import NURTURE, env, free_port
from tests.e2e.test_web_loop import wait_for
from tests.factories import POSTAL_ADDRESS

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REQUIRE_BROWSER = os.environ.get("NURTURE_REQUIRE_BROWSER") == "1"
"""Read once at import: the test's own fixtures clear ``NURTURE_*`` later."""

NOW = "2026-11-27T14:30:00Z"  # Friday 15:30 in Stockholm: inside the example's window
PASSWORD = "correct horse battery staple"
HOSTILE = "<script>alert(1)</script>"
PEOPLE = {
    "karin@example.com": "Karin Lindqvist",
    "jamie@example.com": "Jamie Doe",
    "hostile@example.com": HOSTILE,
    "rolf@example.com": "Rolf Berg",
    "ulla@example.com": "Ulla Lind",
}
API_KEY = "SG.browser-tests-key.not-a-real-one"


def chromium_path() -> str | None:
    """The system's Chromium, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _unavailable(reason: str, *, module: bool = False) -> NoReturn:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} (NURTURE_REQUIRE_BROWSER=1: the browser tests must run)")
    pytest.skip(reason, allow_module_level=module)


def sync_api() -> ModuleType:
    """``playwright.sync_api``, for a test module to import first: without the
    package the module is skipped (failed under ``NURTURE_REQUIRE_BROWSER=1``)."""
    try:
        return importlib.import_module("playwright.sync_api")
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')", module=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        _unavailable(
            "no Chromium on PATH (install Debian's: apt-get install chromium chromium-driver)"
        )
    with sync_api().sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"], headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


def _shape(path: str) -> str:
    """``path`` with every parameter written ``{}``: /admin/sends/{send_id} -> /admin/sends/{}."""
    return re.sub(r"\{[^}]*\}", "{}", path)


@dataclass(frozen=True)
class Site:
    """The served app: its base URL, working folder, database, routes, and
    each subscriber's send status after seeding."""

    base: str
    work: Path
    db_url: str
    paths: frozenset[str]
    statuses: dict[str, str]

    def serves(self, path: str) -> bool:
        """Whether the app has a route ``path`` (parameters may be named anyhow)."""
        return _shape(path) in {_shape(served) for served in self.paths}

    def having(self, status: str) -> list[str]:
        """The addresses whose send has ``status``, in :data:`PEOPLE`'s order."""
        return [address for address in PEOPLE if self.statuses[address] == status]

    def person(self) -> tuple[str, str]:
        """(address, name) of a plainly named subscriber whose email was sent
        (and who did not buy)."""
        address = next(a for a in self.having("sent") if PEOPLE[a] != HOSTILE)
        assert address != self.buyer()
        return address, PEOPLE[address]

    def buyer(self) -> str:
        """Who bought (4 900 SEK, credited to the welcome email)."""
        return self.having("sent")[-1]


def _cli(
    work: Path, db_url: str, *args: str, stdin: str | None = None, exits: int = 0, **extra: str
) -> str:
    """``nurture --now NOW ARGS``, which must exit with ``exits``; its output."""
    values = env(db_url)
    values.update(extra)
    done = subprocess.run(
        [*NURTURE, "--now", NOW, *args], cwd=work, env=values, input=stdin,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == exits, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def _import(work: Path, db_url: str, name: str, people: dict[str, str]) -> None:
    rows = "".join(f'{address},"{who}",en,b2b\n' for address, who in people.items())
    (work / name).write_text("email,name,locale,tags\n" + rows, encoding="utf-8")
    _cli(work, db_url, "subscribers", "import", name, "--consent", "browser tests")


def _prepare(db_url: str) -> None:
    """Migrate the database before anything runs on it, and add the second admin
    (``bo``) straight through the service; ``ana`` is made by the command."""
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with session_factory(engine)() as session:
            create_user(session, "bo", PASSWORD, now=datetime.fromisoformat(NOW), zone="UTC")
            session.commit()
    finally:
        engine.dispose()


def _seed(work: Path, db_url: str) -> dict[str, str]:
    _cli(work, db_url, "admin", "create-user", "ana", "--email", "ana@example.com",
         "--zone", "Europe/Stockholm", stdin=PASSWORD + "\n")  # fmt: skip
    _import(work, db_url, "people.csv", PEOPLE)
    # A SendGrid that refuses one send, never answers another, accepts the rest.
    with FakeSendGrid(api_key=API_KEY) as fake:
        fake.enqueue("400")
        fake.enqueue("hang", seconds=1.5)  # the pass ends with exit 1: an unknown send
        _cli(work, db_url, "dispatch", "--once", exits=1, NURTURE_TRANSPORT="sendgrid",
             NURTURE_SENDGRID_API_KEY=API_KEY, NURTURE_SENDGRID_API_HOST=fake.url,
             NURTURE_SENDGRID_TIMEOUT="0.5", NURTURE_BASE_URL=PUBLIC_BASE_URL,
             NURTURE_POSTAL_ADDRESS=POSTAL_ADDRESS)  # fmt: skip
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            statuses = dict(
                conn.execute(
                    text(
                        "SELECT s.email, d.status FROM send d"
                        " JOIN subscriber s ON s.id = d.subscriber_id"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    assert sorted(statuses.values()) == ["failed", "sent", "sent", "sent", "unknown"], statuses
    assert set(statuses) == set(PEOPLE)
    # One of them buys: the purchase is credited to the welcome email.
    buyer = [a for a in PEOPLE if statuses[a] == "sent"][-1]
    _cli(work, db_url, "events", "add", "purchase", "--email", buyer, "--product",
         "sales-audit", "--amount", "4900", "--currency", "SEK", "--order-id", "B-1")  # fmt: skip
    return statuses


def _route_paths(work: Path, db_url: str) -> frozenset[str]:
    """The paths in the app's route table (the same code the server runs)."""
    settings = load_settings(work, database_url=db_url)
    runtime = build_runtime(
        settings, FixedClock(datetime.fromisoformat(NOW)), transport=MemoryTransport()
    )
    try:
        return frozenset(served.path for served in route_table(create_app(runtime)))
    finally:
        runtime.engine.dispose()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def site(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Needs ``browser`` first: without one, nothing is seeded or served."""
    root = tmp_path_factory.mktemp("browser")
    db_url = f"sqlite:///{root / 'nurture.db'}"
    subprocess.run([*NURTURE, "init", "work"], cwd=root, env=env(db_url), check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    work = root / "work"
    enable_example(work)
    _prepare(db_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    values = env(db_url)
    values.update(NURTURE_NOW=NOW, NURTURE_BASE_URL=base)
    process = subprocess.Popen(
        [*NURTURE, "web", "--host", "127.0.0.1", "--port", str(port)], cwd=work, env=values,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        statuses = _seed(work, db_url)  # while the server starts: the web alone never sends
        wait_for("nurture web to answer", lambda: _answers(f"{base}/healthz"))
        yield Site(base, work, db_url, _route_paths(work, db_url), statuses)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output


@pytest.fixture(autouse=True)
def _pages_built(request: pytest.FixtureRequest) -> None:
    """Skip an ``admin_pages`` test while a path it needs is not served."""
    marker = request.node.get_closest_marker("admin_pages")
    if marker is None:
        return
    site: Site = request.getfixturevalue("site")
    missing = [path for path in marker.args if not site.serves(path)]
    if missing:
        pytest.skip(f"not in the app's route table yet: {', '.join(missing)}")


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    """A fresh browser context (no cookies) that fails the test on any dialog:
    an ``alert`` would mean a subscriber's ``<script>`` ran."""
    context = browser.new_context(base_url=site.base)
    context.set_default_timeout(10_000)
    dialogs: list[str] = []
    tab = context.new_page()
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        yield tab
    finally:
        context.close()
    assert not dialogs, f"a script ran on the page: {dialogs}"


LogIn = Callable[..., Any]


@pytest.fixture
def log_in(page: Page) -> LogIn:
    """Log in through the form as ``name`` (``ana`` by default)."""

    def _log_in(name: str = "ana", then: str = "/admin/account") -> None:
        page.goto(f"/admin/login?next={then}")
        page.get_by_label("Name").fill(name)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(re.escape(then.split("?")[0]) + r"(\?.*)?$"))

    return _log_in
