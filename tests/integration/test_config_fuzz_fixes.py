"""Settings the CLI fuzzing found unchecked, through the real command line
(``nurture.cli.main.app`` in-process): each bad value is one clean line naming
the setting, exit code 2 (a configuration error), never a traceback and never
a command that goes on with a wrong value.

* durations (``lease_seconds``, ``retry_base``, ...): inf, nan, absurdly large;
* ``base_url`` that is not a well-formed http(s) URL;
* ``database_url`` of an unsupported or missing driver, or not a URL, or an
  in-memory SQLite database (every command's writes lost);
* ``nurture.toml`` that is there but is no readable file;
* a list setting from the environment that is not JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from nurture.cli.main import app
from tests.e2e.folders import PUBLIC_BASE_URL, enable_example

PASSWORD = "s3cret-Pa55word"
CONFIGURATION_ERROR = 2


def nurture(folder: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--dir", str(folder), *args])


def clean_failure(result: Result, *needles: str) -> str:
    """The output of a command that failed cleanly, naming each of ``needles``."""
    output = result.output
    assert result.exit_code == CONFIGURATION_ERROR, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    for needle in needles:
        assert needle in output, output
    return output


def refused_by_each(
    project: Path, key: str, value: str, commands: Iterable[list[str]], *needles: str
) -> list[str]:
    """Set ``key`` to ``value``; each of ``commands`` fails cleanly naming ``needles``."""
    set_setting(project, key, json.dumps(value))
    return [clean_failure(nurture(project, *command), *needles) for command in commands]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    made = CliRunner().invoke(
        app,
        [
            "init",
            str(folder),
            "--from",
            "Maja Berg <maja@bergdesign.se>",
            "--postal-address",
            "Berg AB, Gatan 1, 11357 Stockholm, Sweden",
            "--base-url",
            PUBLIC_BASE_URL,
        ],
    )
    assert made.exit_code == 0, made.output
    enable_example(folder)
    upgraded = nurture(folder, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    return folder


def set_setting(folder: Path, key: str, toml_value: str) -> None:
    """``key = toml_value`` in the project's nurture.toml, replacing its line."""
    config = folder / "nurture.toml"
    text = config.read_text(encoding="utf-8")
    line = re.compile(rf"(?m)^{key} = .*$")
    assignment = f"{key} = {toml_value}"
    if line.search(text):
        text = line.sub(lambda _match: assignment, text)
    else:
        text = f"{assignment}\n{text}"
    config.write_text(text, encoding="utf-8")


# --------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lease_seconds", "inf"),
        ("lease_seconds", "1e13"),
        ("retry_base", "inf"),
        ("retry_max", "inf"),
        ("attribution_window", "inf"),
        ("attribution_window", "1e13"),
        ("dispatch_interval", "inf"),
        ("dispatch_interval", "1e13"),
        ("unknown_retry_after", "nan"),
        ("confirm_token_max_age", "1e300"),
        ("rate_limit", "inf"),
        ("max_attempts", "100000"),
    ],
)
def test_an_infinite_or_huge_duration_is_refused_by_validate_doctor_and_dispatch(
    project: Path, key: str, value: str
) -> None:
    set_setting(project, key, value)
    for command in (["validate"], ["doctor", "--skip-dns", "--timeout", "1"], ["dispatch"]):
        clean_failure(nurture(project, *command), f"setting {key!r}", f"NURTURE_{key.upper()}")


def test_a_duration_from_the_environment_is_refused_too(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_LEASE_SECONDS", "inf")
    clean_failure(nurture(project, "dispatch"), "setting 'lease_seconds'", "finite")


def test_a_purchase_is_not_recorded_with_a_huge_attribution_window(project: Path) -> None:
    set_setting(project, "attribution_window", "1e13")
    args = ["--product", "x", "--amount", "1", "--currency", "SEK"]
    added = nurture(project, "events", "add", "purchase", "--email", "k@example.com", *args)
    clean_failure(added, "setting 'attribution_window'", "at most")


def test_durations_up_to_their_bound_are_accepted(project: Path) -> None:
    set_setting(project, "lease_seconds", "86400")
    set_setting(project, "retry_max", "2592000")
    set_setting(project, "attribution_window", "31536000")
    checked = nurture(project, "validate")
    assert checked.exit_code == 0, checked.output


# ----------------------------------------------------------------- base_url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://[::1", "not a valid URL"),
        ("https:// space.com", "spaces"),
        ("https://mail.bergdesign.se/x\r\nBcc: evil@attacker.com", "control characters"),
        ("https://mail.example.com\t", "control characters"),
        ("https://", "no host"),
        ("https://mail.example.com:99999", "not a valid URL"),
        ("https://user:pw@mail.example.com", "user name"),
        ("https://mail.example.com/?utm=x", "query"),
        ("https://mail.example.com/#top", "fragment"),
        ("https://mail.example.com/<x>", "<"),
    ],
)
def test_a_base_url_that_is_no_url_is_refused_by_every_command(
    project: Path, url: str, why: str
) -> None:
    commands = (
        ["validate"],
        ["doctor", "--skip-dns", "--timeout", "1"],
        ["subscribers", "add", "q@example.com"],
        ["dispatch"],
    )
    refused_by_each(project, "base_url", url, commands, "setting 'base_url'", why)
    set_setting(project, "base_url", json.dumps(PUBLIC_BASE_URL))
    assert nurture(project, "subscribers", "show", "q@example.com").exit_code == 1  # not added


@pytest.mark.parametrize(
    "url",
    [
        "https://mail.example.com",
        "https://mail.example.com/nurture/",
        "http://localhost:8000",
        "https://[::1]:8443",
        "https://exämple.se",
    ],
)
def test_a_well_formed_base_url_is_still_accepted(project: Path, url: str) -> None:
    set_setting(project, "base_url", json.dumps(url))
    checked = nurture(project, "validate")
    assert checked.exit_code == 0, checked.output


# ------------------------------------------------------------- database_url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"mysql://u:{PASSWORD}@h/db", "unsupported database 'mysql'"),
        (f"postgresql://user:{PASSWORD}@[::1/db", "cannot be read as a URL"),
        (f"postgresql+nodriver://user:{PASSWORD}@127.0.0.1:1/db", "unknown driver 'nodriver'"),
        ("", "is empty"),
        ("nonsense", "not a database URL"),
        ("foo://bar", "unsupported database 'foo'"),
    ],
)
def test_a_database_url_nurture_cannot_use_is_named_without_its_password(
    project: Path, url: str, why: str
) -> None:
    commands = (["subscribers", "list"], ["dispatch"])
    for output in refused_by_each(project, "database_url", url, commands, "database_url", why):
        assert PASSWORD not in output
    doctor = nurture(project, "doctor", "--skip-dns", "--timeout", "1")
    assert "Traceback" not in doctor.output and not isinstance(doctor.exception, ValueError)
    assert doctor.exit_code != 0 and why in doctor.output and PASSWORD not in doctor.output


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file::memory:?cache=shared&uri=true",
        "sqlite:///file:shop?mode=memory&uri=true",
    ],
)
def test_an_in_memory_database_is_refused_before_it_loses_a_write(project: Path, url: str) -> None:
    set_setting(project, "database_url", json.dumps(url))
    for command in (
        ["subscribers", "add", "mem@example.com"],
        ["validate"],
        ["doctor", "--skip-dns", "--timeout", "1"],
    ):
        clean_failure(
            nurture(project, *command), "setting 'database_url'", "in-memory", "name a file"
        )


# ------------------------------------------------------------- nurture.toml


def _folder(config: Path) -> None:
    config.mkdir()


def _dangling(config: Path) -> None:
    config.symlink_to(config.parent / "gone.toml")


def _loop(config: Path) -> None:
    config.symlink_to(config.parent / "loop.toml")
    (config.parent / "loop.toml").symlink_to(config)


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_folder, "is a folder"),
        (_dangling, "which does not exist"),
        (_loop, "symlink loop"),
    ],
)
def test_a_nurture_toml_that_is_no_file_is_an_error_naming_it(
    project: Path, make: object, why: str
) -> None:
    config = project / "nurture.toml"
    config.rename(project / "good.toml")
    assert callable(make)
    make(config)
    for command in (["validate"], ["db", "upgrade"], ["subscribers", "list"]):
        clean_failure(nurture(project, *command), str(config), why)
    doctor = nurture(project, "doctor", "--skip-dns", "--timeout", "1")
    assert doctor.exit_code != 0 and why in doctor.output


# ------------------------------------------------------ lists from the env


@pytest.mark.parametrize(
    ("variable", "value"),
    [("NURTURE_TRUSTED_PROXIES", "foo"), ("NURTURE_OLD_SECRET_KEYS", "abc")],
)
def test_a_list_variable_that_is_not_json_says_so_and_blames_the_variable(
    project: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    output = clean_failure(nurture(project, "validate"), variable, "must be a JSON list")
    assert f"{variable}='[" in output  # an example of the right form
    assert "cannot read" not in output and "EnvSettingsSource" not in output


def test_a_list_variable_in_json_is_read(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NURTURE_TRUSTED_PROXIES", '["127.0.0.1", "10.0.0.0/8"]')
    checked = nurture(project, "validate")
    assert checked.exit_code == 0, checked.output
