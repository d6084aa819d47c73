"""Finding a template for a locale: the search path, the loader, the environment.

``templates_dir/layout.html`` is the shared layout; ``<locale>/<name>`` are
locale variants. For a subscriber with locale L in a sequence with locale S a
name is looked up in ``L/``, ``<language of L>/``, ``S/``, ``<language of S>/``
and finally the root. ``{% extends %}`` and ``{% include %}`` resolve along the
same search path (it travels in the internal template name, see
``LocaleEnvironment.join_path``), so ``sv/layout.html`` overrides the layout for
Swedish emails.

The loader is the only code that reads template files, and it reads only
regular files whose real path (symbolic links resolved) is inside the real
templates folder, up to :data:`MAX_TEMPLATE_BYTES`: a link to
``/proc/self/environ`` would otherwise mail the process environment, keys
included. A link from one template to another inside the folder is fine.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from jinja2 import BaseLoader, Environment, TemplateNotFound
from jinja2.loaders import split_template_path

from nurture.core.files import FileRefused, read_text
from nurture.core.sandbox import BudgetedSandbox

LAYOUT = "layout.html"
MAX_TEMPLATE_BYTES = 512 * 1024
TemplateRefused = FileRefused  # what a refused template raises (names the file)

# A subscriber's locale comes from a signup form: only a tag that looks like a
# locale may become a folder name, so "../../etc" never reaches the file system.
_LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
_SEP = "|"  # internal template name: "<folder>,<folder>,...,|<template name>"
MARKDOWN_PAGE = "\x00markdown.html"  # NUL is never in a real file name
MARKDOWN_VAR = "__nurture_markdown__"
_MARKDOWN_PAGE_SOURCE = (
    f'{{% extends "{LAYOUT}" %}}{{% block content %}}{{{{ {MARKDOWN_VAR} }}}}{{% endblock %}}'
)


@lru_cache(maxsize=1024)
def locale_search_path(locale: str | None, default_locale: str) -> tuple[str, ...]:
    """Folders to look in, most specific first; ``""`` (the root) is always last."""
    folders: list[str] = []
    for candidate in (locale, default_locale):
        tag = (candidate or "").replace("_", "-")
        if is_locale_tag(tag):
            for folder in (tag, tag.split("-")[0]):
                if folder not in folders:
                    folders.append(folder)
    return (*folders, "")


def is_locale_tag(text: str) -> bool:
    """Whether ``text`` looks like a locale tag (``sv``, ``en-GB``): only such a
    tag names a locale folder."""
    return _LOCALE_RE.match(text) is not None


def internal_name(folders: tuple[str, ...], template: str) -> str:
    """The name Jinja knows a template by: the search path travels in it."""
    return ",".join(folders) + _SEP + template


def _split_name(name: str) -> tuple[tuple[str, ...], str]:
    if _SEP not in name:
        return ("",), name
    folders, _, template = name.partition(_SEP)
    return tuple(folders.split(",")), template


def present(path: Path) -> bool:
    """Whether something is at ``path``: a file, but also a link that leads
    nowhere, a folder or a FIFO. Such a thing is the template (and reading it
    fails with the reason), never a reason to fall back silently to another
    language's file."""
    return path.is_symlink() or path.exists()


class LocaleLoader(BaseLoader):
    """Finds ``<folder>/<template>`` along the search path carried in the name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Every file handed to Jinja: traceback frames with these file names are
        # template code, which is how a runtime error finds its template:line.
        self.files: set[str] = set()

    def candidates(self, folders: tuple[str, ...], template: str) -> list[Path]:
        try:
            pieces = split_template_path(template)  # rejects "..": no way out of the root
        except TemplateNotFound:
            raise TemplateNotFound(
                template,
                f"template {template!r} goes up a folder with '..': templates are named "
                f"from {self.root}, and only files in it can be used",
            ) from None
        return [self.root.joinpath(folder, *pieces) for folder in folders]

    def resolve(self, folders: tuple[str, ...], template: str) -> Path | None:
        return next((p for p in self.candidates(folders, template) if present(p)), None)

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        folders, name = _split_name(template)
        if name == MARKDOWN_PAGE:
            return _MARKDOWN_PAGE_SOURCE, "<markdown page>", None
        path = self.resolve(folders, name)
        if path is None:
            looked = ", ".join(str(p) for p in self.candidates(folders, name))
            raise TemplateNotFound(name, f"template {name!r} not found (looked in {looked})")
        self.files.add(str(path))
        text = read_text(path, limit=MAX_TEMPLATE_BYTES, inside=self.root)
        return text, str(path), None

    def list_templates(self) -> list[str]:
        return sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
        )


class LocaleEnvironment(BudgetedSandbox):
    def join_path(self, template: str, parent: str) -> str:
        # {% extends "layout.html" %} inherits the search path of the template
        # that names it, so the layout is looked up per locale like the body.
        return internal_name(_split_name(parent)[0], template)
