"""The sequences the worker runs: the last good version of each file.

The reload job calls :meth:`SequenceRegistry.reload` when files change. An
invalid edit is logged as ``file:line:column: message`` and the previous good
version of that file keeps running; a valid edit takes effect at once. Templates
are validated too (a fresh :class:`TemplateLibrary` is built, checked, and only
then swapped in).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from nurture.app.settings import Settings
from nurture.authoring.workbench import validate_loaded
from nurture.core.loader import (
    BrokenFile,
    LoadedSequence,
    Sequences,
    broken_file,
    load_sequence_file,
    sequence_files,
)
from nurture.core.rendering import TemplateLibrary
from nurture.errors import Diagnostic

log = logging.getLogger("nurture.app.registry")


@dataclass(frozen=True)
class Snapshot:
    """Sequences and the templates they were validated with, swapped as one."""

    sequences: Sequences  # ``broken``: files with no good version in memory
    library: TemplateLibrary


def _fingerprint(folders: list[Path]) -> tuple[tuple[str, int, int], ...]:
    entries: list[tuple[str, int, int]] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


class SequenceRegistry:
    """Thread-safe holder of the current :class:`Snapshot`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._by_path: dict[Path, LoadedSequence] = {}
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._snapshot = Snapshot(
            Sequences(), TemplateLibrary(settings.templates_dir, brand=settings.brand)
        )
        self.last_problems: list[Diagnostic] = []

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def sequences(self) -> Sequences:
        return self._snapshot.sequences

    def library(self) -> TemplateLibrary:
        return self._snapshot.library

    def reload(self, *, force: bool = False) -> list[Diagnostic]:
        """Re-read changed files; return the problems found (already logged)."""
        folders = [self.settings.sequences_dir, self.settings.templates_dir]
        with self._lock:
            fingerprint = _fingerprint(folders)
            if not force and fingerprint == self._fingerprint:
                return []
            self._fingerprint = fingerprint
            if not force:
                log.info(
                    "sequence or template files changed: validating them",
                    extra={"action": "config.changed"},
                )
            library = TemplateLibrary(self.settings.templates_dir, brand=self.settings.brand)
            problems: list[Diagnostic] = []
            by_path: dict[Path, LoadedSequence] = {}
            broken: list[BrokenFile] = []
            kept_previous = False
            folder = self.settings.sequences_dir
            for path in sequence_files([folder]):
                loaded, found = load_sequence_file(path, inside=folder)
                if loaded is not None:
                    try:
                        found = validate_loaded(self.settings, library, loaded)
                    except Exception as exc:  # one file never stops the others
                        log.exception("checking %s failed", loaded.display)
                        why = f"could not be checked ({type(exc).__name__}): see the log"
                        found = [Diagnostic(loaded.display, 1, 1, why)]
                if loaded is not None and not found:
                    by_path[path] = loaded
                    continue
                problems.extend(found)
                previous = self._by_path.get(path)
                if previous is None:
                    broken.append(
                        BrokenFile(path, loaded.display, loaded.sequence.id)
                        if loaded is not None
                        else broken_file(path, inside=folder)
                    )
                else:
                    by_path[path] = previous
                    kept_previous = True
                    log.error(
                        "%s is invalid; still running its last good version %s",
                        previous.display,
                        previous.version,
                        extra={"action": "config.invalid"},
                    )
            for problem in problems:
                log.error("%s", problem, extra={"action": "config.invalid"})
            sequences = Sequences()
            sequences.broken = tuple(broken)
            for loaded in by_path.values():
                if loaded.sequence.id in sequences:
                    log.error(
                        "%s: sequence id %r is used twice; ignoring this file",
                        loaded.display,
                        loaded.sequence.id,
                    )
                    continue
                sequences[loaded.sequence.id] = loaded
            # A kept old version may use a template that was just broken: keep
            # the old library then. It compiled every template while it was
            # validated, so it keeps rendering the last good versions.
            self._by_path = by_path
            self._snapshot = Snapshot(
                sequences, self._snapshot.library if kept_previous else library
            )
            self.last_problems = problems
            if not force:
                log.info(
                    "sequences reloaded: %d running, %d problem(s)",
                    len(sequences),
                    len(problems),
                    extra={"action": "config.reloaded"},
                )
            return problems
