"""A clean first project, through the real ``nurture`` executable.

``init`` writes the example disabled and asks for (or takes) the sender, the
postal address and the base URL; ``validate`` warns about example values left
in place; a real transport refuses a localhost/http base URL; List-Unsubscribe
gets a mailto: fallback; and no command makes an empty database in a folder
that is not a project.
"""

from __future__ import annotations

import email
import email.policy
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from nurture.cli.main import app
from nurture.testing.fake_sendgrid import FakeSendGrid
from tests.e2e.folders import EXAMPLE, PUBLIC_BASE_URL, enable_example

NURTURE = [sys.executable, "-m", "nurture"]
NOW = "2026-11-27T14:30:00Z"  # Friday 15:30 in Stockholm
SENDER = "Maja Berg <maja@bergdesign.se>"
POSTAL = "Berg Design AB, Sveavägen 10, 113 57 Stockholm, Sweden"
API_KEY = "SG.first-project-key.not-a-real-one"


def clean_env(**extra: str) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    values.update(COLUMNS="200", **extra)
    return values


def run(
    *args: str, cwd: Path, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NURTURE, *args],
        cwd=cwd,
        env=clean_env(**extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """``nurture init shop`` with no flags and no terminal: the placeholders."""
    result = run("init", "shop", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path / "shop"


# -- init writes the example disabled, with placeholders -------------------------


def test_init_without_a_terminal_writes_placeholders_and_says_so(tmp_path: Path) -> None:
    result = run("init", "shop", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sequences/sales-process.yaml is the example, disabled: it sends nothing" in (
        result.stdout
    )
    assert "warning: placeholders for the sender" in result.stderr
    assert "postal_address and base_url" in result.stderr
    folder = tmp_path / "shop"
    sequence = (folder / EXAMPLE).read_text(encoding="utf-8")
    assert "\nenabled: false" in sequence
    assert "EXAMPLE, written by `nurture init`" in sequence
    assert sequence.startswith("# yaml-language-server:")  # editors still find the schema
    assert 'email: "you@example.com"' in sequence
    assert "anna@example.com" not in sequence
    config = (folder / "nurture.toml").read_text(encoding="utf-8")
    assert "Storgatan" not in config and "Exempel AB" not in config
    assert 'postal_address = "Your Company, 1 Example Street' in config
    assert 'base_url = "http://localhost:8000"' in config


def test_the_example_reaches_nobody_until_it_is_enabled(fresh: Path) -> None:
    db = {"NURTURE_DATABASE_URL": f"sqlite:///{fresh / 'nurture.db'}"}
    added = run(
        "--now", NOW, "subscribers", "add", "karin@example.com", "--name", "Karin",
        "--tag", "b2b", cwd=fresh, **db,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "enrolled in sales-process" not in added.stdout
    by_hand = run("--now", NOW, "enroll", "karin@example.com", "sales-process", cwd=fresh, **db)
    assert by_hand.returncode == 1
    assert "'sales-process' is disabled" in by_hand.stderr
    assert "enabled: true" in by_hand.stderr
    sent = run("--now", NOW, "dispatch", "--once", cwd=fresh, **db)
    assert sent.returncode == 0, sent.stderr
    assert "sent 0," in sent.stdout
    assert not list((fresh / "outbox").glob("*.eml"))

    enable_example(fresh)
    enrolled = run("--now", NOW, "enroll", "karin@example.com", "sales-process", cwd=fresh, **db)
    assert enrolled.returncode == 0, enrolled.stderr
    assert "sent 1," in run("--now", NOW, "dispatch", "--once", cwd=fresh, **db).stdout


def test_disabling_a_live_sequence_holds_its_enrollments(fresh: Path) -> None:
    enable_example(fresh)
    added = run("--now", NOW, "subscribers", "add", "karin@example.com", "--tag", "b2b", cwd=fresh)
    assert "enrolled in sales-process" in added.stdout, added.stderr
    path = fresh / EXAMPLE
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\nenabled: true", "\nenabled: false", 1), encoding="utf-8")
    held = run("--now", NOW, "dispatch", "--once", cwd=fresh)
    assert held.returncode == 0, held.stderr
    assert "sent 0," in held.stdout
    path.write_text(text, encoding="utf-8")
    assert "sent 1," in run("--now", NOW, "dispatch", "--once", cwd=fresh).stdout


def test_an_enabled_flag_that_is_no_boolean_is_reported_at_its_line(fresh: Path) -> None:
    path = fresh / EXAMPLE
    lines = path.read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("enabled:"))
    lines[index] = "enabled: sometimes"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("validate", cwd=fresh)
    assert result.returncode == 1
    assert f"sequences/sales-process.yaml:{index + 1}:1: enabled:" in result.stdout


def test_init_takes_the_sender_postal_address_and_base_url_as_flags(tmp_path: Path) -> None:
    result = run(
        "init", "shop", "--from", SENDER, "--postal-address", POSTAL,
        "--base-url", "https://mail.bergdesign.se/", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "placeholders" not in result.stderr
    folder = tmp_path / "shop"
    sequence = (folder / EXAMPLE).read_text(encoding="utf-8")
    assert 'name: "Maja Berg"\n  email: "maja@bergdesign.se"' in sequence
    config = (folder / "nurture.toml").read_text(encoding="utf-8")
    assert f'postal_address = "{POSTAL}"' in config
    assert 'base_url = "https://mail.bergdesign.se"' in config
    checked = run("validate", cwd=folder)
    assert checked.returncode == 0, checked.stdout
    # The flags replaced the example's sender, address and base_url. What is
    # left is the reminder that the example is off, and what only the marketer
    # can replace: the example's brand name and checkout.
    warnings = [line for line in checked.stdout.splitlines() if "warning:" in line]
    assert len(warnings) == 3, checked.stdout
    assert "sales-process is disabled" in warnings[0]
    assert "brand name 'Exempel AB' is the example's" in warnings[1]
    assert "checkout_url https://shop.example.com/checkout/sales-audit" in warnings[2]
    preview = run("preview", "sales-process", "--step", "welcome", "--locale", "en", cwd=folder)
    assert preview.returncode == 0, preview.stderr
    message = email.message_from_bytes(
        (folder / "preview/sales-process/welcome.en.eml").read_bytes(),
        policy=email.policy.default,
    )
    assert message["From"].addresses[0].addr_spec == "maja@bergdesign.se"
    assert message["List-Unsubscribe"].startswith("<https://mail.bergdesign.se/unsubscribe/")
    html = message.get_body(("html",))
    assert html is not None and "Berg Design AB" in html.get_content()


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--from", "maja@bergdesign.se", "give a name too"),
        ("--from", "Maja <not-an-address>", "not a name and address"),
        ("--base-url", "mail.bergdesign.se", "is not an address such as https://"),
        ("--postal-address", "  ", "cannot be empty"),
    ],
)
def test_init_refuses_a_bad_flag(tmp_path: Path, flag: str, value: str, says: str) -> None:
    result = run("init", "shop", flag, value, cwd=tmp_path)
    assert result.returncode == 2
    assert says in result.stderr
    assert not (tmp_path / "shop").exists()


def test_init_asks_on_a_terminal(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [*NURTURE, "init", "shop"], cwd=tmp_path, env=clean_env(), stdin=terminal,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # A sender without a name is asked again; Enter keeps the base URL's default.
        answers = f"maja@bergdesign.se\n{SENDER}\n{POSTAL}\n\n"
        os.write(controller, answers.encode("utf-8"))
        output, errors = process.communicate(timeout=60)
    finally:
        os.close(terminal)
        os.close(controller)
    assert process.returncode == 0, errors
    assert "Sender, as subscribers see it" in output
    assert "give a name too" in errors
    folder = tmp_path / "shop"
    assert 'email: "maja@bergdesign.se"' in (folder / EXAMPLE).read_text(encoding="utf-8")
    config = (folder / "nurture.toml").read_text(encoding="utf-8")
    assert f'postal_address = "{POSTAL}"' in config
    assert 'base_url = "http://localhost:8000"' in config
    assert "placeholders for base_url (nurture.toml)" in errors


# -- validate warns about example values ------------------------------------------


def test_validate_warns_about_example_values_still_in_place(fresh: Path) -> None:
    result = run("validate", cwd=fresh)
    assert result.returncode == 0, result.stdout  # warnings, not problems
    warnings = [line for line in result.stdout.splitlines() if ": warning: " in line]
    text = "\n".join(warnings)
    sequence = (fresh / EXAMPLE).read_text(encoding="utf-8").splitlines()
    enabled_line = next(i for i, line in enumerate(sequence) if line.startswith("enabled:")) + 1
    assert f"sequences/sales-process.yaml:{enabled_line}:1: warning: sales-process is disabled" in (
        text
    )
    assert "warning: sender email you@example.com is an example address" in text
    config = (fresh / "nurture.toml").read_text(encoding="utf-8").splitlines()
    postal_line = next(i for i, line in enumerate(config) if line.startswith("postal_address")) + 1
    assert f"nurture.toml:{postal_line}:1: warning: postal_address is the sample" in text
    assert "warning: base_url 'http://localhost:8000' points at localhost" in text
    # What subscribers would see of the example: its brand and its checkout.
    assert "warning: brand name 'Exempel AB' is the example's" in text
    assert (
        "warning: checkout_url https://shop.example.com/checkout/sales-audit is an example "
        "address: purchases would go nowhere"
    ) in text
    assert len(warnings) == 6, result.stdout
    assert "ok: 1 file(s), sequences: sales-process" in result.stdout


def test_validate_warns_about_the_shipped_example_sender_and_address(fresh: Path) -> None:
    path = fresh / EXAMPLE
    text = path.read_text(encoding="utf-8").replace('"you@example.com"', "anna@example.com")
    path.write_text(text, encoding="utf-8")
    result = run(
        "validate", cwd=fresh,
        NURTURE_POSTAL_ADDRESS="Exempel AB, Storgatan 1, 111 22 Stockholm, Sweden",
        NURTURE_BASE_URL="http://mail.bergdesign.se",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert "sender email anna@example.com is an example address" in result.stdout
    assert "postal_address (from NURTURE_POSTAL_ADDRESS) is the sample" in result.stdout
    assert "base_url (from NURTURE_BASE_URL) 'http://mail.bergdesign.se' is not https://" in (
        result.stdout
    )


# -- a real transport needs a public https base_url -------------------------------


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key=API_KEY) as server:
        yield server


def sendgrid(fake: FakeSendGrid, base_url: str) -> dict[str, str]:
    return {
        "NURTURE_TRANSPORT": "sendgrid",
        "NURTURE_SENDGRID_API_KEY": API_KEY,
        "NURTURE_SENDGRID_API_HOST": fake.url,
        "NURTURE_BASE_URL": base_url,
        "NURTURE_POSTAL_ADDRESS": "Berg Design AB, Verkstadsgatan 4, 117 43 Stockholm, Sweden",
    }


@pytest.mark.parametrize(
    ("command", "base_url"),
    [
        (("dispatch", "--once"), "http://localhost:8000"),
        (("dispatch", "--once"), "https://localhost"),
        (("dispatch", "--once"), "http://mail.bergdesign.se"),
        (("worker",), "http://localhost:8000"),
        (("run", "--port", "0"), "http://127.0.0.1:8000"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else value,
)
def test_a_real_transport_refuses_a_base_url_subscribers_cannot_open(
    fresh: Path, fake: FakeSendGrid, command: tuple[str, ...], base_url: str
) -> None:
    try:
        result = run("--now", NOW, *command, cwd=fresh, timeout=30, **sendgrid(fake, base_url))
    except subprocess.TimeoutExpired:
        pytest.fail(f"`nurture {' '.join(command)}` started with base_url {base_url}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "setting 'base_url'" in result.stderr and "NURTURE_BASE_URL" in result.stderr
    assert "RFC 8058" in result.stderr and "https://" in result.stderr


@pytest.mark.parametrize(
    "command", [("dispatch", "--once"), ("worker",)], ids=lambda value: " ".join(value)
)
@pytest.mark.parametrize(
    "address",
    [
        "Your Company, 1 Example Street, 12345 Your City, Country",  # nurture init's
        "Example AB, Storgatan 1, 111 22 Stockholm, Sweden",  # the setting's default
    ],
)
def test_a_real_transport_refuses_a_sample_postal_address(
    fresh: Path, fake: FakeSendGrid, command: tuple[str, ...], address: str
) -> None:
    """Every footer shows the postal address: through a real provider the
    sample would go out to real people in every email, so nothing starts."""
    enable_example(fresh)
    added = run("--now", NOW, "subscribers", "add", "k@bergdesign.se", "--tag", "b2b", cwd=fresh)
    assert added.returncode == 0, added.stderr
    settings = {**sendgrid(fake, PUBLIC_BASE_URL), "NURTURE_POSTAL_ADDRESS": address}
    try:
        result = run("--now", NOW, *command, cwd=fresh, timeout=30, **settings)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`nurture {' '.join(command)}` started with the sample postal address")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "setting 'postal_address'" in result.stderr, result.stderr
    assert "NURTURE_POSTAL_ADDRESS" in result.stderr and address in result.stderr
    assert fake.stats().get("delivered", 0) == 0


def test_a_real_transport_sends_with_a_public_https_base_url(
    fresh: Path, fake: FakeSendGrid
) -> None:
    enable_example(fresh)
    added = run("--now", NOW, "subscribers", "add", "k@bergdesign.se", "--tag", "b2b", cwd=fresh)
    assert added.returncode == 0, added.stderr
    result = run("--now", NOW, "dispatch", "--once", cwd=fresh, **sendgrid(fake, PUBLIC_BASE_URL))
    assert result.returncode == 0, result.stderr
    assert "sent 1," in result.stdout


def test_the_outbox_keeps_working_on_localhost(fresh: Path) -> None:
    enable_example(fresh)
    added = run("--now", NOW, "subscribers", "add", "k@bergdesign.se", "--tag", "b2b", cwd=fresh)
    assert added.returncode == 0, added.stderr
    result = run("--now", NOW, "dispatch", "--once", cwd=fresh)
    assert result.returncode == 0, result.stderr
    assert "sent 1," in result.stdout


# -- List-Unsubscribe: mailto: fallback --------------------------------------------


def _sent_message(folder: Path, **extra: str) -> email.message.EmailMessage:
    enable_example(folder)
    added = run("--now", NOW, "subscribers", "add", "k@bergdesign.se", "--tag", "b2b", cwd=folder)
    assert added.returncode == 0, added.stderr
    result = run("--now", NOW, "dispatch", "--once", cwd=folder, **extra)
    assert "sent 1," in result.stdout, result.stderr
    [path] = (folder / "outbox").glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_list_unsubscribe_gets_a_mailto_fallback_when_a_mailbox_is_configured(
    fresh: Path,
) -> None:
    message = _sent_message(fresh, NURTURE_UNSUBSCRIBE_MAILBOX="Unsubscribe@BergDesign.se")
    header = str(message["List-Unsubscribe"])
    https, mailto = (part.strip() for part in header.split(","))
    assert https.startswith("<http://localhost:8000/unsubscribe/") and https.endswith(">")
    assert mailto == "<mailto:Unsubscribe@bergdesign.se?subject=unsubscribe>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_list_unsubscribe_is_the_https_link_alone_without_a_mailbox(fresh: Path) -> None:
    message = _sent_message(fresh)
    assert "mailto:" not in str(message["List-Unsubscribe"])


def test_a_bad_unsubscribe_mailbox_is_a_configuration_error(fresh: Path) -> None:
    result = run("validate", cwd=fresh, NURTURE_UNSUBSCRIBE_MAILBOX="not-an-address")
    assert result.returncode == 2
    assert "NURTURE_UNSUBSCRIBE_MAILBOX" in result.stderr


# -- no database where there is no project -----------------------------------------

# Commands that never open the database.
NO_DATABASE = {("init",), ("schema",), ("validate",), ("preview",), ("simulate",)}
# `doctor` reports what is wrong rather than refusing to start: tested on its own below.
DIAGNOSTIC = {("doctor",)}
EXTRA_OPTIONS: dict[tuple[str, ...], list[str]] = {
    ("dispatch",): ["--once"],
    ("run",): ["--port", "0"],
    ("web",): ["--port", "0"],
    ("sends", "resolve"): ["--all-unknown", "--as-sent", "--why", "checked with the provider"],
    ("events", "add"): [
        "--email",
        "karin@example.com",
        "--product",
        "sales-audit",
        "--amount",
        "10",
        "--currency",
        "SEK",
    ],
}
ARGUMENTS = {
    "email": "karin@example.com",
    "sequence": "sales-process",
    "file": "leads.csv",
    "kind": "purchase",
}


def _leaves(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    children = getattr(command, "commands", None)
    if not children:
        yield path, command
        return
    for name, child in sorted(children.items()):
        yield from _leaves(child, (*path, name))


DATABASE_COMMANDS = [
    [
        *path,
        *EXTRA_OPTIONS.get(path, []),
        *(
            ARGUMENTS.get(param.name or "", "x")
            for param in command.params
            if param.param_type_name == "argument" and param.required
        ),
    ]
    for path, command in _leaves(typer.main.get_command(app))
    if path not in NO_DATABASE | DIAGNOSTIC
]


def test_the_database_commands_are_found() -> None:
    names = {" ".join(args[:2]) for args in DATABASE_COMMANDS}
    assert {"db upgrade", "dispatch --once", "worker", "subscribers add", "sends list"} <= names


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_no_command_creates_a_database_where_there_is_no_project(
    tmp_path: Path, args: list[str]
) -> None:
    (tmp_path / "leads.csv").write_text("email\nkarin@example.com\n", encoding="utf-8")
    try:
        result = run(*args, cwd=tmp_path, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`nurture {' '.join(args)}` started in a folder with no nurture.toml")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no nurture.toml here" in result.stderr
    assert "run `nurture init`, or pass --dir" in result.stderr
    assert not (tmp_path / "nurture.db").exists()


def test_doctor_outside_a_project_says_so_and_creates_nothing(tmp_path: Path) -> None:
    result = run("doctor", "--skip-dns", cwd=tmp_path, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no nurture.toml here" in result.stdout
    assert "`nurture init`" in result.stdout
    assert not (tmp_path / "nurture.db").exists()


def test_an_explicit_or_existing_database_needs_no_nurture_toml(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    created = run("db", "upgrade", cwd=tmp_path, NURTURE_DATABASE_URL=url)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "elsewhere.db").is_file()
    # The default database, once it exists, opens without nurture.toml too.
    (tmp_path / "elsewhere.db").rename(tmp_path / "nurture.db")
    listed = run("subscribers", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr


def test_dir_points_a_command_at_the_project(fresh: Path) -> None:
    result = run("--dir", str(fresh), "subscribers", "list", cwd=fresh.parent)
    assert result.returncode == 0, result.stderr
    assert (fresh / "nurture.db").is_file()
    assert not (fresh.parent / "nurture.db").exists()
