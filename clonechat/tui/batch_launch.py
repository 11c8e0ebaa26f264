"""Starting a batch from the TUI: in another process, watched through the database.

The batch runs as ``clonechat batch SPEC --json`` in a child process rather than inside the
app: it keeps its own signal handling, crash safety and resume semantics exactly as on the
command line, a slow spec never competes with the interface's event loop, and the TUI sees its
progress the same way it sees any batch: new rows in SQLite.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from clonechat.batch.spec import load_spec_file
from clonechat.location import DbLocation
from clonechat.registry import Registry, default_registry


@dataclass(frozen=True)
class BatchResult:
    exit_code: int
    summary: dict[str, Any] | None
    #: The last line the batch wrote to stderr (its error, if it failed before running).
    error: str

    @property
    def headline(self) -> str:
        if self.summary is None:
            return self.error or f"the batch exited with code {self.exit_code}"
        d = self.summary.get("dialogues", {})
        parts = ", ".join(f"{n} {status}" for status, n in d.items() if status != "total")
        return f"experiment {self.summary.get('experiment')}: {d.get('total', 0)} dialogues ({parts})"


def check_spec(path: Path, registry: Registry | None = None) -> str:
    """Validate a spec before starting anything; returns the experiment's name. Raises
    ``SpecError`` (one line: file, line, key, reason) for a bad spec."""
    return load_spec_file(path, registry=registry or default_registry()).name


async def run_batch(spec: Path, db: DbLocation | str) -> BatchResult:
    """Run ``clonechat batch`` on ``spec`` to its end in a child process."""
    result = await anyio.run_process(
        [sys.executable, "-m", "clonechat", "batch", str(spec), "--db", str(db), "--json"], check=False
    )
    stderr = result.stderr.decode("utf-8", "replace").strip().splitlines()
    try:
        summary = json.loads(result.stdout) if result.stdout.strip() else None
    except ValueError:
        summary = None
    return BatchResult(result.returncode, summary, stderr[-1] if stderr else "")
