"""Settings as ``validate`` and every command read them: a placeholder
``secret_key`` is one of the example values ``validate`` warns about; an
invalid setting written in ``nurture.toml`` is named at its ``line:column``
there (never when the value came from the environment); an item of a list
setting is named as one, with what each item must be; a byte-order mark at
the start of ``nurture.toml`` is read past."""

from __future__ import annotations

import codecs
import re
import secrets
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nurture.app.settings import load_settings
from nurture.authoring.checks import example_values
from nurture.authoring.project import ProjectChoices, parse_sender, settings_text
from nurture.cli.main import app
from nurture.errors import ConfigurationError, Diagnostic

GOOD = ProjectChoices(
    parse_sender("Maja Berg <maja@bergdesign.se>"),
    "Berg Design AB, Sveavägen 10, 113 57 Stockholm, Sweden",
    "https://mail.bergdesign.se",
)
SECRET = "secret_key is a placeholder: anyone could forge unsubscribe and preferences links"


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths in messages are shown relative to the current folder: nurture.toml."""
    monkeypatch.chdir(tmp_path)


def project(tmp_path: Path, *, secret: str | None = None, extra: str = "") -> Path:
    """A folder with the nurture.toml ``init`` writes (real values, a random
    secret key unless ``secret``), ``extra`` lines at its end."""
    text = settings_text(GOOD, secrets.token_urlsafe(32)) + extra
    if secret is not None:
        text = re.sub(r'(?m)^secret_key = "[^"]*"', f'secret_key = "{secret}"', text)
    (tmp_path / "nurture.toml").write_text(text, encoding="utf-8")
    return tmp_path


def line_of(folder: Path, start: str) -> int:
    lines = (folder / "nurture.toml").read_text(encoding="utf-8-sig").splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.startswith(start))


def refusal(folder: Path) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(folder)
    return str(caught.value)


# -- 1. validate warns about a placeholder secret_key ------------------------------


def secret_warnings(folder: Path) -> list[Diagnostic]:
    found = example_values(load_settings(folder), [])
    return [warning for warning in found if "secret_key" in warning.message]


def test_the_secret_key_init_writes_gets_no_warning(tmp_path: Path) -> None:
    assert secret_warnings(project(tmp_path)) == []


@pytest.mark.parametrize("placeholder", ["change-me", "CHANGEME", "secret", " placeholder "])
def test_a_placeholder_secret_key_in_nurture_toml_is_a_warning_at_its_line(
    tmp_path: Path, placeholder: str
) -> None:
    folder = project(tmp_path, secret=placeholder)
    [warning] = secret_warnings(folder)
    assert (warning.file, warning.line, warning.column) == (
        "nurture.toml",
        line_of(folder, "secret_key"),
        1,
    )
    assert warning.message.startswith(SECRET)
    assert repr(placeholder.strip()) not in warning.message  # a secret key is never shown


def test_an_empty_secret_key_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_SECRET_KEY", "")
    [warning] = secret_warnings(project(tmp_path))
    assert (warning.line, warning.column) == (1, 1)
    assert warning.message.startswith("secret_key (from NURTURE_SECRET_KEY) is empty: ")


def test_a_secret_key_set_nowhere_is_the_default_placeholder(tmp_path: Path) -> None:
    folder = project(tmp_path)
    text = (folder / "nurture.toml").read_text(encoding="utf-8")
    (folder / "nurture.toml").write_text(
        re.sub(r"(?m)^secret_key = .*\n", "", text), encoding="utf-8"
    )
    [warning] = secret_warnings(folder)
    where = "set neither in nurture.toml nor in NURTURE_SECRET_KEY"
    assert warning.message.startswith(f"secret_key ({where}) is a placeholder")


def test_validate_of_a_fresh_project_warns_about_the_secret_key_only_when_it_is_one(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["init", "shop"])
    assert made.exit_code == 0, made.output
    fresh = runner.invoke(app, ["--dir", "shop", "validate"])
    assert fresh.exit_code == 0, fresh.output
    assert "secret_key" not in fresh.output
    toml = tmp_path / "shop" / "nurture.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(re.sub(r'(?m)^secret_key = "[^"]*"', 'secret_key = ""', text), "utf-8")
    placeholder = runner.invoke(app, ["--dir", "shop", "validate"])
    assert placeholder.exit_code == 0, placeholder.output  # a warning, not a problem
    line = line_of(tmp_path / "shop", "secret_key")
    assert f"nurture.toml:{line}:1: warning: secret_key is empty: anyone could forge" in (
        " ".join(placeholder.output.split())
    )


# -- 3. an item of a list setting ------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "item", "each"),
    [
        ("NURTURE_TRUSTED_PROXIES", "[1]", 1, "an IP address or network in quotes"),
        ("NURTURE_TRUSTED_PROXIES", '["10.0.0.1", null]', 2, "an IP address or network"),
        ("NURTURE_TRUSTED_PROXIES", '[["10.0.0.1"]]', 1, "an IP address or network"),
        ("NURTURE_OLD_SECRET_KEYS", "[12345]", 1, "a former secret key in quotes"),
    ],
)
def test_a_list_item_of_the_wrong_type_names_the_variable_and_what_items_must_be(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    item: int,
    each: str,
) -> None:
    monkeypatch.setenv(variable, value)
    message = refusal(project(tmp_path))
    key = variable.removeprefix("NURTURE_").lower()
    assert message.startswith(
        f"setting {key!r} (in nurture.toml as {key}, or {variable} as a JSON list): "
        f"item {item} is not a string; each item must be {each}"
    ), message
    assert "under [" not in message and f"{key}." not in message
    assert "12345" not in message  # the item may be a secret


def test_a_list_item_in_nurture_toml_is_named_at_the_key(tmp_path: Path) -> None:
    folder = project(tmp_path, extra='trusted_proxies = ["10.0.0.1", 2]\n')
    line = line_of(folder, "trusted_proxies")
    assert refusal(folder).startswith(
        f"nurture.toml:{line}:1: setting 'trusted_proxies' (in nurture.toml as "
        "trusted_proxies, or NURTURE_TRUSTED_PROXIES as a JSON list): item 2 is not a string"
    )


# -- 4. a top-level setting written in nurture.toml: its line and column ------------


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ('transport = "sendgird"', "unknown transport 'sendgird'"),
        ("batch_size = 0", "Input should be greater than or equal to 1"),
        ("  rate_limit = -1", "Input should be greater than or equal to 0.0001"),
        ('base_url = "https://a.example/?q"', "must not have a query"),
        ("frobnicate = 1", "unknown key 'frobnicate'"),
    ],
)
def test_a_setting_written_in_nurture_toml_is_named_at_its_line(
    tmp_path: Path, written: str, says: str
) -> None:
    key = written.split("=")[0].strip()
    text = settings_text(GOOD, secrets.token_urlsafe(32))
    # The key replaces the line init wrote for it, or is added before [brand].
    if re.search(rf"(?m)^{key} = ", text):
        text = re.sub(rf"(?m)^{key} = .*$", written, text)
    else:
        text = text.replace("\n# Your brand", f"\n{written}\n# Your brand")
    (tmp_path / "nurture.toml").write_text(text, encoding="utf-8")
    line = line_of(tmp_path, written)
    column = len(written) - len(written.lstrip()) + 1
    message = refusal(tmp_path)
    assert message.startswith(f"nurture.toml:{line}:{column}: setting {key!r} "), message
    assert says in message


def test_a_setting_from_the_environment_has_no_line_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Written in the file too; the environment's value is the one refused.
    folder = project(tmp_path, extra="batch_size = 10\n")
    monkeypatch.setenv("NURTURE_BATCH_SIZE", "0")
    assert refusal(folder).startswith(
        "setting 'batch_size' (in nurture.toml as batch_size, or NURTURE_BATCH_SIZE): "
    )


def test_several_bad_settings_each_get_their_line(tmp_path: Path) -> None:
    folder = project(tmp_path, extra="batch_size = 0\nmax_attempts = 0\n")
    lines = refusal(folder).splitlines()
    assert [line.split(" setting")[0] for line in lines] == [
        f"nurture.toml:{line_of(folder, 'batch_size')}:1:",
        f"nurture.toml:{line_of(folder, 'max_attempts')}:1:",
    ]


# -- 5. a byte-order mark at the start of nurture.toml -------------------------------


def test_nurture_toml_with_a_byte_order_mark_reads_as_without(tmp_path: Path) -> None:
    folder = project(tmp_path)
    toml = folder / "nurture.toml"
    plain = load_settings(folder)
    toml.write_bytes(codecs.BOM_UTF8 + toml.read_bytes())
    marked = load_settings(folder)
    assert marked.model_dump() == plain.model_dump()
    assert marked.base_url == "https://mail.bergdesign.se"


def test_after_a_byte_order_mark_the_first_line_is_still_named(tmp_path: Path) -> None:
    toml = tmp_path / "nurture.toml"
    toml.write_bytes(codecs.BOM_UTF8 + b'batch_size = 0\ntransport = "outbox"\n')
    assert refusal(tmp_path).startswith("nurture.toml:1:1: setting 'batch_size' ")


def test_validate_reads_nurture_toml_saved_with_a_byte_order_mark(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["init", "shop", "--postal-address", "Berg AB, Gatan 1, Malmö"])
    assert made.exit_code == 0, made.output
    toml = tmp_path / "shop" / "nurture.toml"
    toml.write_bytes(codecs.BOM_UTF8 + toml.read_bytes())
    result = runner.invoke(app, ["--dir", "shop", "validate"])
    assert result.exit_code == 0, result.output
    assert "Invalid statement" not in result.output
    assert "ok: 1 file(s)" in result.output


def test_a_file_that_is_not_toml_is_still_refused_with_its_place(tmp_path: Path) -> None:
    (tmp_path / "nurture.toml").write_bytes(codecs.BOM_UTF8 + b"batch_size 0\n")
    assert "(at line 1, column 12)" in refusal(tmp_path)
