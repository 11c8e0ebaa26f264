"""``clonechat batch`` for the crash test, with two test-only hooks patched in from outside.

- The scripted model sleeps 30-80 ms per turn, so a batch lasts long enough to be killed at
  many different moments (replies do not depend on timing, only on seed and context).
- Some node inserts print ``IN-COMMIT`` and pause *inside* the writer's open transaction, so the
  test can SIGKILL the process at a moment when rows are written but not committed.

Usage: python -m tests.crash.driver [clonechat batch arguments...]
"""

from __future__ import annotations

import random
import sys
import time
from typing import Any

import anyio

import clonechat.store.writes as writes
from clonechat.cli import main
from clonechat.providers.scripted import ScriptedProvider

_generate = ScriptedProvider.generate
_insert_nodes = writes.insert_nodes


async def slow_generate(self: ScriptedProvider, *args: Any, **kwargs: Any) -> Any:
    await anyio.sleep(random.uniform(0.03, 0.08))
    return await _generate(self, *args, **kwargs)


def pausing_insert_nodes(conn: Any, nodes: Any, metrics: Any = None) -> None:
    _insert_nodes(conn, nodes, metrics)
    if random.random() < 0.2:
        print("IN-COMMIT", flush=True)
        time.sleep(0.05)


ScriptedProvider.generate = slow_generate  # type: ignore[method-assign]
writes.insert_nodes = pausing_insert_nodes

if __name__ == "__main__":
    print("READY", flush=True)
    sys.argv = ["clonechat", "batch", *sys.argv[1:]]
    main()
