"""The code style the project promises: ruff clean, formatted, and ``mypy --strict`` clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint() -> None:
    result = run("ruff", "check", "clonechat", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", "clonechat", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_never_imports_textual() -> None:
    """The engine, store, providers, the read layer and the query layer are usable without the TUI."""
    read_modules = ", ".join(f"clonechat.read.{p.stem}" for p in sorted((ROOT / "clonechat" / "read").glob("*.py")))
    code = (
        f"import sys, clonechat.engine.dialogue, clonechat.store.writer, {read_modules}, "
        "clonechat.providers.embedded, clonechat.session, clonechat.query.search, "
        "clonechat.query.keywords, clonechat.query.export, clonechat.query.frames, clonechat.store.schema_doc; "
        "sys.exit(1 if any(m == 'textual' or m.startswith('textual.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0
