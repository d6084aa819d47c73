"""A path with a trailing slash too many (or too few) still leads to its page,
by a relative redirect that never names the host the request claimed.

Starlette's own redirect built an absolute URL from the ``Host`` header, so a
request with ``Host: evil.example`` was told to go to ``http://evil.example/…``
(a link in a cached answer, or a proxy that passes the header through, would
then send people there).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tests.integration.test_leaving_web import Site, make_site

EVIL = {"Host": "evil.example"}


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> Iterator[Site]:
    made = make_site(engine, tmp_path)
    yield made
    made.runtime.dispatcher.close()


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/healthz/", "/healthz"),
        ("/healthz///", "/healthz"),
        ("/healthz/?probe=1&x=%2F", "/healthz?probe=1&x=%2F"),
        ("/admin/", "/admin"),
        ("/admin/login/", "/admin/login"),
        ("/metrics/", "/metrics"),
    ],
)
def test_the_other_slash_redirects_to_a_path_on_this_site(
    site: Site, path: str, location: str
) -> None:
    answer = site.client.get(path, headers=EVIL, follow_redirects=False)

    assert answer.status_code == 307
    assert answer.headers["location"] == location
    assert "evil" not in answer.text


def test_the_redirect_keeps_the_method_and_leads_to_the_page(site: Site) -> None:
    assert site.client.get("/healthz/", follow_redirects=True).status_code == 200
    head = site.client.head("/healthz/", follow_redirects=False)
    assert (head.status_code, head.headers["location"]) == (307, "/healthz")


@pytest.mark.parametrize(
    "path",
    [
        "//evil.example/",  # "//evil.example" would be another host to a browser
        "/\\evil.example/",
        "/no-such-page/",
        "/no-such-page",
        "/",
    ],
)
def test_no_redirect_away_from_the_site_or_to_nowhere(site: Site, path: str) -> None:
    answer = site.client.get(path, headers=EVIL, follow_redirects=False)

    assert answer.status_code == 404
    assert "location" not in answer.headers
    assert answer.json() == {"detail": "Not Found"}


def test_a_404_of_a_route_that_matched_is_not_turned_into_a_redirect(site: Site) -> None:
    answer = site.client.get("/unsubscribe/not-a-token", follow_redirects=False)

    assert answer.status_code == 404
    assert "location" not in answer.headers


def test_other_http_errors_keep_their_answer(site: Site) -> None:
    answer = site.client.request("PATCH", "/healthz", follow_redirects=False)

    assert answer.status_code == 405
    assert answer.json() == {"detail": "Method Not Allowed"}
