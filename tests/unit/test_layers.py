"""The layers hold: read every module's imports and check the rules that
docs/architecture.md promises.

* the pure core imports nothing from nurture but ``nurture.core`` and
  ``nurture.errors`` (no database, web, settings or clock);
* nothing outside ``nurture/store/`` builds SQL (the fakes in
  ``nurture/testing/`` excepted: they are test infrastructure);
* no private (``_name``) function, class or constant is imported from another
  module, in the package, its tests or its benchmarks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "nurture"

# What building SQL takes: SQLAlchemy's / SQLModel's statement and expression
# constructors, and raw SQL text.
SQL_BUILDERS = frozenset(
    {"select", "insert", "update", "delete", "text", "func", "and_", "or_", "bindparam", "col"}
)
SQL_MODULES = ("sqlalchemy", "sqlmodel")


def modules(*folders: Path) -> Iterator[tuple[str, ast.Module]]:
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            if "_example" in path.parts or ".venv" in path.parts:
                continue
            rel = path.relative_to(ROOT).as_posix()
            yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=rel)


def imports_from(tree: ast.Module) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, names) for every ``from X import a, b`` and ``import X``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


Modules = list[tuple[str, ast.Module]]


def core_crossings(trees: Modules) -> list[str]:
    return [
        f"{rel}:{line}: imports {module}"
        for rel, tree in trees
        if rel.startswith("nurture/core/")
        for line, module, _ in imports_from(tree)
        if (module == "nurture" or module.startswith("nurture."))
        and not module.startswith(("nurture.core", "nurture.errors"))
    ]


def sql_outside_store(trees: Modules) -> list[str]:
    return [
        f"{rel}:{line}: {', '.join(sorted(set(names) & SQL_BUILDERS))} from {module}"
        for rel, tree in trees
        if rel.startswith("nurture/") and not rel.startswith(("nurture/store/", "nurture/testing/"))
        for line, module, names in imports_from(tree)
        if module.split(".")[0] in SQL_MODULES and set(names) & SQL_BUILDERS
    ]


def private_imports(trees: Modules) -> list[str]:
    return [
        f"{rel}:{line}: {name} from {module}"
        for rel, tree in trees
        for line, module, names in imports_from(tree)
        if module.startswith("nurture")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]


def test_the_core_imports_only_the_core_and_errors() -> None:
    assert core_crossings(list(modules(PACKAGE / "core"))) == []


def test_no_sql_is_built_outside_the_store() -> None:
    assert sql_outside_store(list(modules(PACKAGE))) == []


def test_no_private_name_is_imported_across_modules() -> None:
    assert private_imports(list(modules(PACKAGE, ROOT / "tests", ROOT / "benchmarks"))) == []


@pytest.mark.parametrize(
    ("path", "source", "check"),
    [
        ("nurture/core/x.py", "from nurture.app.settings import Settings\n", core_crossings),
        ("nurture/sending/x.py", "from sqlalchemy import select\n", sql_outside_store),
        (
            "tests/x.py",
            "from nurture.core.model import (\n    Step,\n    _Strict,\n)\n",
            private_imports,
        ),
    ],
)
def test_each_check_catches_a_crossing(path: str, source: str, check: object) -> None:
    """The checks above are not vacuous: each flags a module that crosses its rule."""
    assert callable(check)
    assert check([(path, ast.parse(source))]) != []
