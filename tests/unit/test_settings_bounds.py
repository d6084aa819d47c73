"""The bounds of the settings themselves (see also
tests/integration/test_config_fuzz_fixes.py, through the command line)."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from nurture.app.settings import SECONDS_LIMITS, Settings
from nurture.errors import ConfigurationError
from nurture.store.db import make_engine
from nurture.urls import sqlite_in_memory, url_problem


@pytest.mark.parametrize("key", sorted(SECONDS_LIMITS))
def test_every_duration_refuses_inf_nan_and_more_than_its_bound(key: str) -> None:
    limit, _words = SECONDS_LIMITS[key]
    for bad in (math.inf, math.nan, limit * 2, 1e300):
        with pytest.raises(ValidationError, match=key):
            Settings(**{key: bad})
    assert getattr(Settings(**{key: limit}), key) == limit


@pytest.mark.parametrize(
    "url",
    [
        "https://[::1",
        "https:// space.com",
        "https://a.example\r\nBcc: x@y.z",
        "https://a.example/\u202e",
        "https://",
        "https://a.example:70000",
        "https://u@a.example",
        "https://a.example/?q",
        "https://a.example/#f",
        "ftp://a.example",
    ],
)
def test_a_base_url_that_is_not_a_clean_http_url_has_a_problem(url: str) -> None:
    assert url_problem(url) is not None
    with pytest.raises(ValidationError, match="base_url"):
        Settings(base_url=url)


@pytest.mark.parametrize(
    "url",
    ["https://mail.example.com", "https://mail.example.com/p/", "http://localhost:8000"],
)
def test_a_clean_base_url_has_none(url: str) -> None:
    assert url_problem(url) is None
    assert Settings(base_url=url).base_url == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "in_memory"),
    [
        ("sqlite://", True),
        ("sqlite:///:memory:", True),
        ("sqlite:///file::memory:?cache=shared&uri=true", True),
        ("sqlite:///file:x?mode=memory&uri=true", True),
        ("sqlite:///nurture.db", False),
        ("sqlite:////var/lib/nurture/nurture.db", False),
        ("sqlite:///file:x.db?mode=ro&uri=true", False),
    ],
)
def test_in_memory_sqlite_urls_are_recognised(url: str, in_memory: bool) -> None:
    assert sqlite_in_memory(url) is in_memory


def test_make_engine_still_opens_an_in_memory_database_for_tests() -> None:
    engine = make_engine("sqlite://")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select 1").scalar() == 1
    engine.dispose()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mysql://u:Pa55word@h/db", "unsupported database 'mysql'"),
        ("postgresql://u:Pa55word@[::1/db", "cannot be read as a URL"),
        ("nonsense", "cannot be read as a URL"),
    ],
)
def test_make_engine_names_the_setting_and_hides_the_password(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match="database_url") as raised:
        make_engine(url)
    assert why in str(raised.value) and "Pa55word" not in str(raised.value)
