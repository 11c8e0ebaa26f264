"""The package map ``docs/architecture.md`` draws, enforced.

- SQL lives in ``clonechat/store`` (writes, migrations) and ``clonechat/read`` (every question
  a consumer asks): nowhere else is there SQL text, a database driver or a statement executed.
- Which package may import which: the TUI never imports the CLI; the engine, the providers, the
  store and the read layer never import the TUI or the CLI.

Both checks read the source (every ``import``, including the ones inside functions), so a lazy
import cannot hide an edge, and both are tested against a planted violation so they cannot pass
by finding nothing.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clonechat"

#: Packages allowed to hold SQL.
SQL_HOMES = ("store", "read")

#: SQL keywords as clonechat writes SQL (upper case). ``git grep -c -E`` with this pattern
#: outside the SQL homes prints nothing.
SQL_PATTERN = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|WITH RECURSIVE|JOIN|WHERE|BEGIN IMMEDIATE|"
    r"CREATE (TABLE|VIEW|INDEX|TRIGGER|VIRTUAL TABLE)|DROP (TABLE|VIEW))\b"
)
#: Names that run SQL or build it: a call to one of these outside the SQL homes is a leak.
EXECUTING_CALLS = frozenset({"execute", "executemany", "executescript", "exec_driver_sql", "exec"})
#: Imports that only SQL code needs.
SQL_MODULES = ("sqlite3", "psycopg")
SQL_NAMES = {
    "sqlalchemy": {"text", "select", "insert", "update", "delete", "exists", "func", "create_engine", "literal"},
    "sqlmodel": {"select", "col", "Session", "create_engine", "text", "func"},
}

#: package -> packages it must never import (directly; the rule holds for every module, so it
#: holds transitively too).
FORBIDDEN_IMPORTS = {
    "engine": {"tui", "cli"},
    "providers": {"tui", "cli"},
    "store": {"tui", "cli"},
    "read": {"tui", "cli"},
    "tui": {"cli"},
}


def _package_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def _modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[str, set[str]]]:
    """(module, names imported from it) for every import statement in the tree."""
    found: list[tuple[str, set[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, set()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, {alias.name for alias in node.names}))
    return found


def sql_leaks(root: Path) -> list[str]:
    """Every place outside the SQL homes that holds SQL text, imports a driver or SQL builder,
    or executes a statement, as ``path:line: what``."""
    leaks: list[str] = []
    for path in _modules(root):
        if _package_of(path, root) in SQL_HOMES:
            continue
        source = path.read_text(encoding="utf-8")
        where = path.relative_to(root.parent)
        for number, line in enumerate(source.splitlines(), start=1):
            if match := SQL_PATTERN.search(line):
                leaks.append(f"{where}:{number}: SQL keyword {match.group(0)!r}")
        tree = ast.parse(source)
        for module, names in _imports(tree):
            top = module.split(".")[0]
            if top in SQL_MODULES:
                leaks.append(f"{where}: imports {module}")
            if bad := names & SQL_NAMES.get(top, set()):
                leaks.append(f"{where}: imports {', '.join(sorted(bad))} from {module}")
        for node in ast.walk(tree):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr in EXECUTING_CALLS:
                leaks.append(f"{where}:{func.lineno}: calls .{func.attr}()")
    return leaks


def import_violations(root: Path) -> list[str]:
    """Every import of a package by one that must never import it, as ``path:line: a -> b``."""
    found: list[str] = []
    for path in _modules(root):
        package = _package_of(path, root)
        forbidden = FORBIDDEN_IMPORTS.get(package, set())
        if not forbidden:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            for module in modules:
                parts = module.split(".")
                if parts[0] == root.name and len(parts) > 1 and parts[1] in forbidden:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {package} -> {parts[1]}")
                if parts[0] == "textual" and package != "tui":
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {package} -> textual")
    return found


def test_no_sql_outside_the_store_and_the_read_layer() -> None:
    assert sql_leaks(PACKAGE) == []


def test_packages_import_only_what_the_map_allows() -> None:
    assert import_violations(PACKAGE) == []


@pytest.fixture
def copy_of_package(tmp_path: Path) -> Path:
    copy = tmp_path / "clonechat"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_the_sql_rule_finds_a_stray_select_in_the_tui(copy_of_package: Path) -> None:
    target = copy_of_package / "tui" / "data.py"
    target.write_text(target.read_text() + '\nSTRAY = "SELECT id FROM node"\n')
    assert [leak for leak in sql_leaks(copy_of_package) if "tui/data.py" in leak and "SELECT" in leak]


def test_the_sql_rule_finds_an_executed_statement_and_a_driver(copy_of_package: Path) -> None:
    target = copy_of_package / "analysis" / "stats.py"
    target.write_text(target.read_text() + "\nimport sqlite3\n\ndef _f(c: object) -> None:\n    c.execute(q)\n")
    leaks = [leak for leak in sql_leaks(copy_of_package) if "analysis/stats.py" in leak]
    assert any("imports sqlite3" in leak for leak in leaks)
    assert any("calls .execute()" in leak for leak in leaks)


def test_the_import_rule_finds_the_tui_importing_the_cli(copy_of_package: Path) -> None:
    target = copy_of_package / "tui" / "app.py"
    target.write_text(target.read_text() + "\n\ndef _late() -> None:\n    from clonechat.cli import console\n")
    assert any("tui -> cli" in v for v in import_violations(copy_of_package))


def test_the_import_rule_finds_the_read_layer_importing_the_tui(copy_of_package: Path) -> None:
    target = copy_of_package / "read" / "paths.py"
    target.write_text(target.read_text() + "\nimport clonechat.tui.app\n")
    assert any("read -> tui" in v for v in import_violations(copy_of_package))
