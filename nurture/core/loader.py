"""Reading sequence files: YAML with positions, pydantic validation, diagnostics.

ruamel.yaml (not PyYAML) because it keeps the line and column of every key,
reports duplicate keys with their position, and follows YAML 1.2, where ``on``,
``yes`` and ``1:30`` stay strings instead of turning into booleans and
sexagesimal integers. Every problem becomes a :class:`Diagnostic` naming
``file:line:column`` (1-based) at the offending key.

Files are read through :func:`nurture.core.files.read_text`: at most
:data:`MAX_SEQUENCE_BYTES`, regular files only, never under ``/proc``, ``/sys``
or ``/dev``. A file found by listing a folder must stay inside it (a link to
another file in the folder is fine; a link out of it is refused); a file named
explicitly (``nurture validate path/to/file.yaml``) is read where it is. A
link that leads back to itself (``a.yaml -> b.yaml -> a.yaml``) is a problem
in that file, like any other file that cannot be read, never a crash of the
whole command.
"""

from __future__ import annotations

import errno
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from nurture.core.conditions import (
    ConditionError,
    check_references,
    compile_condition,
    name_problems,
)
from nurture.core.files import MEGABYTE, FileRefused, read_text
from nurture.core.messages import key_path, reader_problem, schema_diagnostics, yaml_problem
from nurture.core.model import Path as KeyPath
from nurture.core.model import Sequence
from nurture.core.yamltext import (
    MAX_DEPTH,
    first_surrogate,
    first_tag,
    positioned_yaml,
    shape_problem,
    surrogate_message,
    tag_message,
    too_deep_brackets,
)
from nurture.errors import Diagnostic

SAMPLE_SUFFIX = ".sample.yaml"
MAX_SEQUENCE_BYTES = MEGABYTE


@dataclass(frozen=True)
class Positions:
    """Maps a key path such as ``("steps", 2, "wait")`` to its 1-based (line, column).

    ``text`` is the file's text: with it, :meth:`within` finds a word inside a
    value (a name in a ``when`` condition), whatever the value's quoting.
    """

    root: Any
    text: str = ""

    def _walk(self, path: Iterable[str | int]) -> tuple[Any, tuple[int, int], tuple[int, int]]:
        """The node at ``path``, its key's position and its value's (0-based)."""
        node = self.root
        key_at = value_at = (0, 0)
        if isinstance(node, CommentedMap | CommentedSeq):
            key_at = value_at = (node.lc.line, node.lc.col)
        for key in path:
            if isinstance(node, CommentedMap) and key in node:
                key_at, value_at = node.lc.key(key), node.lc.value(key)
                node = node[key]
            elif isinstance(node, CommentedSeq) and isinstance(key, int) and key < len(node):
                key_at = value_at = node.lc.item(key)
                node = node[key]
            # Other loc parts (pydantic union tags like 'str') are not in the file.
        return node, key_at, value_at

    def of(self, path: Iterable[str | int]) -> tuple[int, int]:
        _, (line, column), _ = self._walk(path)
        return line + 1, column + 1

    def value_of(self, path: Iterable[str | int]) -> tuple[int, int]:
        """Where the value at ``path`` starts (its quote, for a quoted string)."""
        _, _, (line, column) = self._walk(path)
        return line + 1, column + 1

    def within(self, path: Iterable[str | int], value: str, offset: int) -> tuple[int, int]:
        """The position of the word at ``offset`` in the string ``value`` found at
        ``path``: the same occurrence of that word in the file, from where the
        value starts. Quotes, escapes and folded lines move a word, never split
        it. Falls back on the value's start."""
        path = tuple(path)
        line, column = self.value_of(path)
        word = _WORD.match(value, offset)
        if not self.text or not 0 <= offset < len(value):
            return line, column
        if word is not None:
            bounded = r"(?<![A-Za-z0-9_])" + re.escape(word.group()) + r"(?![A-Za-z0-9_])"
            pattern = re.compile(bounded)
        elif value[offset] in "\\\"'" or value[offset].isspace():
            return line, column  # quoting or folding may change these
        else:
            pattern = re.compile(re.escape(value[offset]))  # a sign: = | ( ‘ ...
        before = len(pattern.findall(value[:offset]))
        lines = self.text.splitlines(keepends=True)
        start = sum(len(text) for text in lines[: line - 1]) + column - 1
        for count, match in enumerate(pattern.finditer(self.text, start)):
            if count == before:
                found_line = self.text.count("\n", 0, match.start()) + 1
                line_start = self.text.rfind("\n", 0, match.start()) + 1
                return found_line, match.start() - line_start + 1
        return line, column


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class LoadedSequence:
    """A valid sequence with where it came from and its content version."""

    sequence: Sequence
    path: Path
    display: str
    positions: Positions
    version: str

    def diagnostic(self, path: KeyPath, message: str) -> Diagnostic:
        line, column = self.positions.of(path)
        return Diagnostic(self.display, line, column, message)

    def value_diagnostic(self, path: KeyPath, message: str) -> Diagnostic:
        """A problem with the value at ``path`` (not its key), at the value."""
        line, column = self.positions.value_of(path)
        return Diagnostic(self.display, line, column, message)


@dataclass(frozen=True)
class BrokenFile:
    """A sequence file that did not load, and the sequence id it most likely holds."""

    path: Path
    display: str
    sequence_id: str


class Sequences(dict[str, LoadedSequence]):
    """The valid sequences by id, and the files that failed to load (``broken``).

    Enrollment uses ``broken`` to fall back on the last good version stored in
    the database (see :func:`nurture.audience.enrollment.with_last_good`).
    """

    broken: tuple[BrokenFile, ...] = ()
    duplicates: Mapping[str, tuple[str, ...]] = MappingProxyType({})
    """Per id used by more than one file, the files after the first (as shown)."""


_ID_LINE = re.compile(r"""^id:\s*["']?([A-Za-z0-9][A-Za-z0-9_.-]*)["']?\s*(?:#.*)?$""", re.M)


def guess_sequence_id(path: Path, text: str | None) -> str:
    """The id a broken file most likely holds: its top-level ``id:`` line, else its name."""
    if text is not None:
        match = _ID_LINE.search(text)
        if match:
            return match.group(1)
    return path.stem


_STORED_TIME = re.compile(r"^\d\d:\d\d:\d\d$")


def sequence_from_definition(definition: Any) -> Sequence:
    """A sequence back from its stored form (``model_dump(mode="json")``).

    The JSON form writes times as ``HH:MM:SS``, which the file format (``HH:MM``)
    refuses; they are handed back as times. Raises pydantic's ValidationError.
    """

    def revive(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: revive(item) for key, item in value.items()}
        if isinstance(value, list):
            return [revive(item) for item in value]
        if isinstance(value, str) and _STORED_TIME.match(value):
            return time.fromisoformat(value)
        return value

    return Sequence.model_validate(revive(definition))


def content_version(sequence: Sequence) -> str:
    """A short hash of the sequence's meaning (comments and formatting excluded).

    ``enabled: true`` and a missing ``brand`` are left out of the hash: they
    are the defaults, and versions recorded before those keys existed must stay
    the same. A disabled sequence hashes differently, so a stored version says
    whether it may be sent.
    """
    exclude = {"enabled"} if sequence.enabled else set()
    if sequence.brand is None:
        exclude.add("brand")
    digest = hashlib.sha256(
        sequence.model_dump_json(exclude=exclude or None).encode("utf-8")
    ).hexdigest()
    return digest[:12]


def parse_sequence(
    text: str, display: str, path: Path | None = None
) -> tuple[LoadedSequence | None, list[Diagnostic]]:
    """Parse and validate one sequence file's text. Never raises for bad input."""
    deep = too_deep_brackets(text)
    if deep is not None:
        message = f"the file nests lists and mappings more than {MAX_DEPTH} deep"
        return None, [Diagnostic(display, *deep, message)]
    try:
        data = positioned_yaml().load(text)
    except RecursionError:
        message = f"the file nests lists and mappings more than {MAX_DEPTH} deep"
        return None, [Diagnostic(display, 1, 1, message)]
    except MarkedYAMLError as exc:
        return None, [Diagnostic(display, *yaml_problem(exc, text))]
    except ReaderError as exc:
        return None, [Diagnostic(display, *reader_problem(exc, text))]
    except YAMLError as exc:
        return None, [Diagnostic(display, 1, 1, f"invalid YAML: {exc}")]
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        # The YAML library's own failures on some malformed input (a merge key
        # that merges its own mapping): still bad input, never a traceback.
        return None, [Diagnostic(display, 1, 1, f"invalid YAML ({type(exc).__name__})")]
    tag = first_tag(text)
    if tag is not None:
        return None, [Diagnostic(display, tag[0], tag[1], tag_message(tag[2]))]
    shape = shape_problem(data)
    if shape is not None:
        return None, [Diagnostic(display, 1, 1, shape)]
    positions = Positions(data, text)
    surrogate = first_surrogate(data)
    if surrogate is not None:
        where, char = surrogate
        at = positions.value_of(where) if where else (1, 1)
        what = f"{key_path(where, data)}: " if where else ""
        return None, [Diagnostic(display, *at, what + surrogate_message(char))]
    if not isinstance(data, CommentedMap):
        return None, [Diagnostic(display, 1, 1, "a sequence file must be a mapping of keys")]
    problems: list[tuple[KeyPath, str]] = []
    try:
        sequence = Sequence.model_validate(data, context={"problems": problems})
    except ValidationError as exc:
        return None, schema_diagnostics(display, data, positions.of, exc, text)
    diagnostics = [Diagnostic(display, *positions.of(p), m) for p, m in problems]
    diagnostics.extend(_condition_diagnostics(sequence, display, data, positions))
    if diagnostics:
        return None, diagnostics
    loaded = LoadedSequence(
        sequence, path or Path(display), display, positions, content_version(sequence)
    )
    return loaded, []


def _condition_diagnostics(
    sequence: Sequence, display: str, data: Any, positions: Positions
) -> list[Diagnostic]:
    """Every ``when`` compiles, uses only known names and refers to earlier
    steps; each problem is at its place inside the condition's text."""
    diagnostics: list[Diagnostic] = []
    earlier: list[str] = []
    for index, step in enumerate(sequence.steps):
        if step.when is not None:
            path = ("steps", index, "when")
            where = positions.value_of(path)
            key = key_path(path, data)
            try:
                condition = compile_condition(step.when)
            except ConditionError as exc:
                if exc.offset is not None:
                    where = positions.within(path, step.when, exc.offset)
                diagnostics.append(Diagnostic(display, *where, f"{key}: {exc}"))
            else:
                for problem in name_problems(step.when):
                    at = positions.within(path, step.when, problem.offset)
                    diagnostics.append(Diagnostic(display, *at, f"{key}: {problem.message}"))
                for message in check_references(condition, earlier):
                    diagnostics.append(Diagnostic(display, *where, f"{key}: {message}"))
        earlier.append(step.id)
    return diagnostics


SYMLINK_LOOP = (
    "a symlink loop: the link leads, through other links, back to itself; "
    "point it at a real file or remove it"
)


def symlink_loop(path: Path) -> bool:
    """Whether following the links in ``path`` goes round in a circle.

    ``Path.resolve`` raises RuntimeError for a loop on Python 3.11 and 3.12
    (an OSError with ELOOP later), which no caller expects from a path; and
    ``exists()`` or ``is_file()`` just answer False, as for a missing file.
    """
    try:
        path.resolve(strict=True)
    except RuntimeError:
        return True
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def read_file(path: Path, *, limit: int, inside: Path | None = None) -> str:
    """:func:`nurture.core.files.read_text`, with a symlink loop refused
    (:class:`FileRefused`, :data:`SYMLINK_LOOP`) like any file it will not read."""
    if symlink_loop(path):
        raise FileRefused(path, SYMLINK_LOOP)
    try:
        return read_text(path, limit=limit, inside=inside)
    except RuntimeError as exc:  # a loop made since the check: Path.resolve's error
        raise FileRefused(path, SYMLINK_LOOP) from exc


def display_path(path: Path) -> str:
    """``path`` relative to the working folder, its links resolved; a link in
    a loop is shown where it is (its folder resolved), as it cannot be followed."""
    try:
        real = path.resolve()
    except (RuntimeError, OSError):
        try:
            real = path.parent.resolve() / path.name
        except (RuntimeError, OSError):
            return str(path)
    try:
        return str(real.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_sequence_file(
    path: Path, *, inside: Path | None = None
) -> tuple[LoadedSequence | None, list[Diagnostic]]:
    """Load one file; with ``inside``, its real path must be in that folder."""
    display = display_path(path)
    try:
        text = read_file(path, limit=MAX_SEQUENCE_BYTES, inside=inside)
    except FileRefused as exc:
        return None, [Diagnostic(display, exc.line, exc.column, exc.reason)]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(display, 1, 1, f"cannot read file: {exc}")]
    try:
        return parse_sequence(text, display, path)
    except Exception as exc:  # the boundary: one file never stops the others
        # Every known kind of bad input has its own message; this is the net
        # for the next one, so the worker keeps the last good version and
        # `validate` says which file, instead of a traceback.
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        message = f"this file could not be read ({type(exc).__name__}: {detail}): please report it"
        return None, [Diagnostic(display, 1, 1, message)]


def _listed(paths: Iterable[Path]) -> list[tuple[Path, Path | None]]:
    """Each sequence file with the folder it was found in (None: named explicitly)."""
    found: list[tuple[Path, Path | None]] = []
    for path in paths:
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.suffix in (".yaml", ".yml") and not child.name.endswith(
                    (SAMPLE_SUFFIX, ".sample.yml")
                ):
                    found.append((child, path))
        else:
            found.append((path, None))
    return found


def sequence_files(paths: Iterable[Path]) -> list[Path]:
    """Expand folders to their ``*.yaml``/``*.yml`` sequence files (samples excluded)."""
    return [path for path, _ in _listed(paths)]


def broken_file(path: Path, *, inside: Path | None = None) -> BrokenFile:
    """Describe a file that failed to load (reads it again, within the same limits)."""
    try:
        text: str | None = read_file(path, limit=MAX_SEQUENCE_BYTES, inside=inside)
    except (FileRefused, OSError, UnicodeDecodeError):
        text = None
    return BrokenFile(path, display_path(path), guess_sequence_id(path, text))


def load_sequences(paths: Iterable[Path]) -> tuple[Sequences, list[Diagnostic]]:
    """Load every sequence under ``paths``; ids must be unique across files.

    The files that fail are listed in the result's ``broken``.
    """
    loaded = Sequences()
    broken: list[BrokenFile] = []
    diagnostics: list[Diagnostic] = []
    duplicates: dict[str, tuple[str, ...]] = {}
    for path, folder in _listed(paths):
        result, problems = load_sequence_file(path, inside=folder)
        diagnostics.extend(problems)
        if result is None:
            broken.append(broken_file(path, inside=folder))
            continue
        seq_id = result.sequence.id
        if seq_id in loaded:
            diagnostics.append(
                result.diagnostic(
                    ("id",), f"sequence id {seq_id!r} is already used by {loaded[seq_id].display}"
                )
            )
            duplicates[seq_id] = (*duplicates.get(seq_id, ()), result.display)
            continue
        loaded[seq_id] = result
    loaded.broken = tuple(broken)
    loaded.duplicates = duplicates
    return loaded, diagnostics
