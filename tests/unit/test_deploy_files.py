"""The deployment files say only what nurture understands.

``compose.yaml`` and the systemd units in ``docs/deploy.md`` are copied by
people who deploy; a misspelt ``NURTURE_*`` variable there would be silently
ignored by the shell, and refused only when the process starts. So every
variable they set must be a setting of :class:`~nurture.app.settings.Settings`,
and every command they run a real ``nurture`` command with real options.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
from ruamel.yaml import YAML

from nurture.app.runtime import open_engine
from nurture.app.settings import Settings
from nurture.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DEPLOY = ROOT / "docs" / "deploy.md"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text(encoding="utf-8"))
    return data


def _check_variable(name: str) -> None:
    assert name.startswith("NURTURE_"), name
    setting = name.removeprefix("NURTURE_").lower()
    assert setting in Settings.model_fields, f"{name} is not a setting of nurture"


def _check_command(words: list[str]) -> None:
    """``words`` (after the program) name a real command, with real options."""
    # Typer's own command classes (it carries its click): a group has ``commands``.
    command: Any = typer.main.get_command(app)
    rest = list(words)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        found = command.commands.get(name)
        assert found is not None, f"`nurture {' '.join(words)}`: no command {name!r}"
        command = found
    assert not hasattr(command, "commands"), f"`nurture {' '.join(words)}` names a group"
    options = {opt for param in command.params for opt in param.opts}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"`nurture {' '.join(words)}`: no {word}"


def test_compose_sets_only_real_settings_and_runs_real_commands() -> None:
    compose = _compose()
    services = compose["services"]
    nurture_services = {name: s for name, s in services.items() if "command" in s}
    assert {"web", "worker-1", "worker-2"} <= set(nurture_services), list(services)
    commands = []
    for name, service in nurture_services.items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        assert "NURTURE_TRANSPORT" in environment, f"{name} lost the shared settings"
        for variable in environment:
            _check_variable(variable)
        # Secrets come from a file outside the repository, never inline.
        assert service.get("env_file") == "nurture.env", name
        for secret in ("NURTURE_SECRET_KEY", "NURTURE_SENDGRID_API_KEY", "NURTURE_DATABASE_URL"):
            assert secret not in environment, f"{name} has {secret} inline"
        words = list(service["command"])
        words = words[1:] if words[:1] == ["nurture"] else words
        _check_command(words)
        commands.append(words[0])
    assert sorted(commands) == ["web", "worker", "worker"]
    assert services["db"]["image"].startswith("postgres")
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "nurture.env" in ignored


def test_the_deploy_guide_runs_real_commands_and_sets_real_settings() -> None:
    text = DEPLOY.read_text(encoding="utf-8")
    starts = re.findall(r"^ExecStart=(.+)$", text, flags=re.MULTILINE)
    assert len(starts) == 2, starts  # nurture-web and nurture-worker@
    for line in starts:
        program, *words = shlex.split(line)
        assert program.endswith("/nurture"), line
        _check_command(words)
    assert sorted(shlex.split(line)[1] for line in starts) == ["web", "worker"]
    variables = re.findall(r"^(NURTURE_[A-Z_]+)=", text, flags=re.MULTILINE)
    assert "NURTURE_DATABASE_URL" in variables
    for variable in variables:
        _check_variable(variable)
    # Every setting the guide's table names in backticks exists.
    for row in re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)? \|", text, flags=re.MULTILINE):
        for setting in filter(None, row):
            assert setting in Settings.model_fields, setting


def test_the_checks_catch_a_misspelt_variable_and_an_unknown_command() -> None:
    with pytest.raises(AssertionError, match="not a setting"):
        _check_variable("NURTURE_BATCHSIZE")
    with pytest.raises(AssertionError, match="no command"):
        _check_command(["workers"])
    with pytest.raises(AssertionError, match="no --bind"):
        _check_command(["web", "--bind", "0.0.0.0"])


def test_the_pool_settings_size_each_process_s_connection_pool() -> None:
    settings = Settings(
        database_url="postgresql+psycopg://nurture@127.0.0.1:1/nurture",
        database_pool_size=3,
        database_max_overflow=1,
    )
    engine = open_engine(settings, migrate=False)  # connects lazily: no server needed
    try:
        assert engine.pool.size() == 3  # type: ignore[attr-defined]
        assert engine.pool._max_overflow == 1  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_the_image_has_the_database_driver_compose_uses() -> None:
    """compose.yaml runs on PostgreSQL: the image it builds needs psycopg, which
    comes only with the ``postgres`` extra (a bare ``pip install .`` lacks it)."""
    compose = _compose()
    assert compose["x-nurture"]["build"] == "."
    installs = re.findall(r"pip install[^\n]*", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert installs, "the Dockerfile installs nurture with pip"
    extras = re.findall(r"\.\[([a-z,]+)\]", " ".join(installs))
    assert any("postgres" in found.split(",") for found in extras), installs
    # Every footer shows the postal address: compose names the variable to set.
    assert "NURTURE_POSTAL_ADDRESS" in compose["x-nurture"]["environment"]
