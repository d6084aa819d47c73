"""The README's marketer walkthrough, run as written in a fresh folder.

Every console block in README.md preceded by ``<!-- readme-test: NAME -->`` is
run here, in order: ``nurture init``, ``cd``, then ``validate``, ``preview`` and
``simulate``, with the edits the README describes between them (``EDITS``).
Each command must end with the block's exit code, and every line the README
shows must be printed (spacing aside; a line ``...`` stands for lines left
out). So the README cannot drift from what the commands print.

When a command's output changes on purpose, run it as the README does and
paste the new lines into the README; to check fewer lines of a block, leave
the others out of the README with ``...``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# The folder the README's examples run in (as `Created /tmp/readme/shop` shows).
README_FOLDER = "/tmp/readme"
MARKED_BLOCK = re.compile(r"<!-- readme-test: ([a-z-]+) -->\n```console\n(.*?)\n```", re.DOTALL)


def replace_first(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path}: {old!r} not found"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def typo_in_a_wait(shop: Path) -> None:
    replace_first(shop / "sequences/sales-process.yaml", "wait: 2 days", "wait: 2 fortnights")


def typo_in_a_template(shop: Path) -> None:
    # "after fixing that, with a typo in a template"
    replace_first(shop / "sequences/sales-process.yaml", "wait: 2 fortnights", "wait: 2 days")
    path = shop / "templates/en/choosing.md"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(2, "Hello {{ subscriber.frist_name }}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Block:
    """How to run one marked block: its exit code, the terminal width its
    output was pasted at, and an edit to make before each command (None: none)."""

    exit_code: int = 0
    columns: int = 200
    edits: list[Callable[[Path], None] | None] = field(default_factory=list)
    undo_edits: bool = True


# The marked blocks, in README order.
EDITS: dict[str, Block] = {
    "init": Block(),
    "validate": Block(),
    "validate-problems": Block(exit_code=1, edits=[typo_in_a_wait, typo_in_a_template]),
    "preview": Block(),
    "simulate": Block(columns=100),
    "simulate-json": Block(),
}


@dataclass
class Command:
    line: str
    shown: list[str]


def commands(block: str) -> list[Command]:
    """``$ `` lines (with ``\\`` continuations) and the output shown after each."""
    found: list[Command] = []
    lines = block.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.startswith("$ "):
            assert found, f"output before the first command: {line!r}"
            found[-1].shown.append(line)
            continue
        command = line[2:]
        while command.endswith("\\"):
            command = command[:-1].rstrip() + " " + lines[index].strip()
            index += 1
        found.append(Command(command, []))
    return found


def marked_blocks() -> list[tuple[str, str]]:
    return MARKED_BLOCK.findall(README.read_text(encoding="utf-8"))


def normal(line: str) -> str:
    return " ".join(line.split())


def test_every_marked_block_has_its_instructions() -> None:
    assert [name for name, _ in marked_blocks()] == list(EDITS)


def test_the_marketer_walkthrough_prints_what_the_readme_shows(tmp_path: Path) -> None:
    cwd = tmp_path
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    for name, text in marked_blocks():
        block = EDITS[name]
        saved: dict[Path, bytes] = {}
        if block.edits:
            saved = {
                path: path.read_bytes()
                for folder in ("sequences", "templates")
                for path in (cwd / folder).rglob("*")
                if path.is_file()
            }
        for number, command in enumerate(commands(text)):
            edit = block.edits[number] if number < len(block.edits) else None
            if edit is not None:
                edit(cwd)
            words = shlex.split(command.line, comments=True)
            if words[0] == "cd":
                cwd = cwd / words[1]
                continue
            assert words[0] == "nurture", f"{name}: only nurture commands run here: {command}"
            result = subprocess.run(
                [sys.executable, "-m", "nurture", *words[1:]],
                cwd=cwd,
                env={**base_env, "COLUMNS": str(block.columns)},
                capture_output=True,
                text=True,
                timeout=120,
            )
            printed = result.stdout + result.stderr
            where = f"README block {name!r}, `{command.line}`:\n{printed}"
            assert result.returncode == block.exit_code, where
            actual = {normal(line) for line in printed.splitlines()}
            for shown in command.shown:
                expected = normal(shown.replace(README_FOLDER, str(tmp_path)))
                if expected and expected != "...":
                    assert expected in actual, f"{where}\nmissing: {shown}"
        if block.undo_edits:
            for path, content in saved.items():
                path.write_bytes(content)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("$ nurture a \\\n    --b c\nout\n$ cd x", [("nurture a --b c", ["out"]), ("cd x", [])]),
        (
            "$ nurture validate   # a comment\n...\nok",
            [("nurture validate   # a comment", ["...", "ok"])],
        ),
    ],
)
def test_commands_are_read_as_a_shell_would(
    block: str, expected: list[tuple[str, list[str]]]
) -> None:
    assert [(c.line, c.shown) for c in commands(block)] == expected
