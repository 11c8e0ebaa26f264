"""Sharing an experiment with another researcher, and importing one (``clonechat share``,
``clonechat import``).

A finding travels as one zip archive that someone else can open, read and rerun the analysis
of: the HTML report, the experiment's rows as the JSONL export, its spec, a datasheet saying what
was run and what was left out, and a manifest of checksums. Importing it rebuilds the experiment
row for row (ids included, so the seeded statistics reproduce exactly) in any run database.

- :mod:`~clonechat.share.private`: what is private on this machine (keys, passwords, paths).
- :mod:`~clonechat.share.scrub`: taking it out of every string of every row, and of documents.
- :mod:`~clonechat.share.records`: JSONL records back into a run database, through the store.
- :mod:`~clonechat.share.manifest`: the archive's manifest (pydantic).
- :mod:`~clonechat.share.archive`: writing the zip deterministically; reading and verifying one.
- :mod:`~clonechat.share.datasheet`: ``DATASHEET.md``.
- :mod:`~clonechat.share.bundle`: ``clonechat share``, start to finish.
- :mod:`~clonechat.share.importer`: ``clonechat import``, start to finish.
"""
