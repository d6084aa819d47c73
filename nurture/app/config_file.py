"""Finding and reading ``nurture.toml``: whether it is there to be read, its
data (:class:`ConfigFileSource`), and where a key is written in it, so that an
error can name ``file:line:column``."""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic_settings import SettingsError, TomlConfigSettingsSource

from nurture.errors import ConfigurationError

CONFIG_FILE = "nurture.toml"


def read_toml(path: Path | Traversable) -> dict[str, Any]:
    """The data in the TOML file ``path``. A UTF-8 byte-order mark at its start
    (Notepad and some Windows editors write one) is skipped: TOML's reader
    takes it for the first character of a key and says "Invalid statement"."""
    text = path.read_bytes().removeprefix(codecs.BOM_UTF8).decode("utf-8")
    return tomllib.loads(text)


class ConfigFileSource(TomlConfigSettingsSource):
    """The settings in ``nurture.toml`` (the file named by ``model_config["toml_file"]``),
    read by :func:`read_toml`. pydantic-settings reads each file through
    ``_read_file``; this is the one place nurture changes how (tested by the
    byte-order-mark cases of ``tests/unit/test_settings_file_errors.py``)."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        return read_toml(file_path)


def key_position(toml: Path, key: str, table: str | None = None) -> tuple[int, int] | None:
    """The 1-based line and column of ``key`` in ``[table]`` of ``toml`` (at
    the top level without ``table``), if written there."""
    try:
        lines = toml.read_text(encoding="utf-8-sig").splitlines()  # as read_toml reads it
    except (OSError, UnicodeDecodeError):
        return None
    header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
    assignment = re.compile(rf"^(\s*){re.escape(key)}\s*=")
    inside = table is None
    for number, line in enumerate(lines, start=1):
        opened = header.match(line)
        if opened:
            inside = opened.group(1) == table
        elif inside and (found := assignment.match(line)):
            return number, len(found.group(1)) + 1
    return None


def shown_path(path: Path) -> str:
    """``path`` relative to the current directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def config_file_present(toml: Path) -> bool:
    """Whether ``toml`` is there to be read: False when nothing is at that
    path; ConfigurationError when something is, but not a file that can be
    read (a folder, a dangling symlink, a symlink loop, a device): running on
    the defaults instead would ignore the project's settings silently."""
    try:
        mode = toml.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        if not os.path.lexists(toml):
            return False
        problem = f"is a symlink to {os.readlink(toml)}, which does not exist"
    except OSError as exc:  # a symlink loop, a name too long, no access to the folder
        loop = exc.errno == errno.ELOOP
        problem = "is a symlink loop" if loop else (exc.strerror or type(exc).__name__)
    else:
        if stat.S_ISREG(mode):
            return True
        problem = "is a folder, not a file" if stat.S_ISDIR(mode) else "is not a regular file"
    raise ConfigurationError(f"cannot read {toml}: {problem}")


def source_error(toml: Path, exc: SettingsError) -> str:
    """A value pydantic-settings could not parse: a list or table setting
    from the environment that is not JSON, named as the variable it came from."""
    found = re.search(r'field "(\w+)" from source "(\w+)"', str(exc))
    if found is None:
        return f"cannot read {toml}: {exc}"
    key, source = found.groups()
    variable = f"NURTURE_{key.upper()}"
    if source != "EnvSettingsSource":
        return f"cannot read {toml}: setting {key!r}: {exc}"
    example = {
        "trusted_proxies": '\'["127.0.0.1", "10.0.0.0/8"]\'',
        "old_secret_keys": "'[\"the-former-secret-key\"]'",
        "brand": '\'{"name": "Acme", "colour": "#0a7"}\'',
    }.get(key)
    shape = "a JSON object" if key == "brand" else "a JSON list"
    hint = f", e.g. {variable}={example}" if example else ""
    return f"setting {key!r} (from the environment variable {variable}): must be {shape}{hint}"
