"""The read layer: every question clonechat asks of a run database, answered once, here.

Consumers (the CLI's display commands, the TUI, the analysis and report, ``query``/``search``/
``export``, the pandas frames, scoring's lookups, batch resume) read through these modules and
hold no SQL of their own; writes stay in :mod:`clonechat.store` behind the single writer.
``tests/test_architecture.py`` enforces both, and ``docs/architecture.md`` draws the map.

- :mod:`~clonechat.read.connect`: the one read-only way to open a database, the one schema check.
- :mod:`~clonechat.read.dialogues`: dialogue summaries (the one definition of "turns"), lookups.
- :mod:`~clonechat.read.paths`: the path from the root to a node (the one walk, lazy).
- :mod:`~clonechat.read.sides`: side nodes (predictions, coordination, reports) and where they sit.

This package imports nothing heavy at import time, so ``clonechat query`` stays quick.
"""
