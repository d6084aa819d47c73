"""Reading the marketer's files: regular files only, inside their folder, with a size cap.

Templates, sequence files and sample files are written by people who do not
run the server. A symbolic link can point anywhere: ``/proc/self/environ``
(the environment, API keys included), ``/dev/zero`` (never ends), a 50 MB
file. :func:`read_text` refuses those with a :class:`FileRefused` whose
message names the file and the rule, never the content.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MEGABYTE = 1024 * 1024
# Kernel file systems: their "regular" files are generated on read (the
# environment, memory maps) and report a size of 0.
_SYSTEM_FOLDERS = tuple(Path(p) for p in ("/proc", "/sys", "/dev"))


class FileRefused(Exception):
    """A file that is not read: outside its folder, not a regular file, too
    large, not UTF-8. ``line`` and ``column`` say where, when it is a place in it."""

    def __init__(self, path: Path, reason: str, *, line: int = 1, column: int = 1) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.line = line
        self.column = column


NOT_UTF8 = (
    "not UTF-8 text: save the file with the UTF-8 encoding (in most editors: "
    "Save As, Encoding: UTF-8)"
)


def decode_utf8(path: Path, data: bytes) -> str:
    """``data`` as UTF-8; bytes that are not raise :class:`FileRefused` at the first bad one."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        raise FileRefused(path, NOT_UTF8, line=line, column=column) from exc


def read_text(path: Path, *, limit: int, inside: Path | None = None) -> str:
    """The UTF-8 text of ``path``, a regular file of at most ``limit`` bytes.

    With ``inside``, the file's real path (links resolved) must be under the
    real path of ``inside``; a link from one file to another in the folder is
    fine. A missing file raises ``FileNotFoundError`` as usual (a link to a
    missing file, or a loop of links, is refused); bytes that are not UTF-8 are
    refused too, with the place of the first one and how to fix it.
    """
    try:
        real = path.resolve()
    except RuntimeError:  # Python 3.11-3.12's word for ELOOP
        raise FileRefused(path, "refused: a symlink loop (the link leads back to itself)") from None
    if path.is_symlink() and not real.exists():
        raise FileRefused(path, f"refused: a link to {real}, which does not exist")
    if inside is not None and not real.is_relative_to(inside.resolve()):
        raise FileRefused(path, f"refused: a link to {real}, outside {inside}")
    if any(real.is_relative_to(folder) for folder in _SYSTEM_FOLDERS):
        raise FileRefused(path, f"refused: a link to {real}, a system file")
    # The checks are made on the open file. ``real`` has no link left in it, so
    # O_NOFOLLOW refuses one swapped in since; O_NONBLOCK: a FIFO must not hang.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FileRefused(path, f"cannot read: {exc.strerror}") from exc
    info = os.fstat(fd)  # before fdopen, which refuses a folder with its own error
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise FileRefused(path, f"refused: {kind}")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:  # refused before reading a byte
            raise FileRefused(path, f"file too large ({info.st_size} bytes > {limit})")
        data = handle.read(limit + 1)
    if len(data) > limit:  # grew since fstat
        raise FileRefused(path, f"file too large (more than {limit} bytes)")
    return decode_utf8(path, data)
