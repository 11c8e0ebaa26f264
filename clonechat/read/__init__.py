"""The read layer: every question clonechat asks of a run database, answered once, here.

Consumers (the CLI's display commands, the TUI, the analysis and report, ``query``/``search``/
``export``, the pandas frames, scoring's lookups, batch resume) read through these modules and
hold no SQL of their own; writes stay in :mod:`clonechat.store` behind the single writer.
``tests/test_architecture.py`` enforces both, and ``docs/architecture.md`` draws the map.

- :mod:`~clonechat.read.connect`: the one read-only way to open a database, the one schema check.
- :mod:`~clonechat.read.dialogues`: dialogue summaries (the one definition of "turns"), lookups, prompts.
- :mod:`~clonechat.read.paths`: the path from the root to a node (the one walk, lazy).
- :mod:`~clonechat.read.tree`: children, roots and branches of a dialogue's tree.
- :mod:`~clonechat.read.sides`: side nodes (predictions, coordination, reports) and where they sit.
- :mod:`~clonechat.read.scores`: predictions with their scores in force (``v_score``), scoring's lookups.
- :mod:`~clonechat.read.experiments`: experiments, their conditions and counts.
- :mod:`~clonechat.read.resume`: where stored dialogues continue from (batch resume, the TUI).
- :mod:`~clonechat.read.feed`: what other processes committed since a cursor (live watching).
- :mod:`~clonechat.read.search`, :mod:`~clonechat.read.keywords`: full-text search, keyword rates.
- :mod:`~clonechat.read.transcripts`: an experiment's whole trees and scores in one read each (the
  HTML report's transcripts), and what its reproducibility section states (settings, seeds, times).
- :mod:`~clonechat.read.console`, :mod:`~clonechat.read.frames`, :mod:`~clonechat.read.export_rows`:
  ``clonechat query``'s guarded SQL console, ``open_run_db``'s frames, an experiment's rows for export.

This package imports nothing heavy at import time, so ``clonechat query`` stays quick.
"""
