"""``clonechat share`` and ``clonechat import``: an experiment to another researcher and back.

Declared in :mod:`clonechat.cli.app`, which imports this module only when one of the two runs
(``--help`` loads nothing of it), and ``share`` imports the report's machinery only when it
runs (``import`` needs none of it). The work is :mod:`clonechat.share`; this module calls it and
prints what it did, one line per fact.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from clonechat.constants import DEFAULT_DB
from clonechat.location import DbLocation, db_location
from clonechat.share.importer import Imported, import_file
from clonechat.store.database import Database


def share_command(db: DbLocation | str, experiment: str, out: Path | None) -> int:
    """Write the experiment's share archive; print its path, size and what was redacted."""
    # Here, not above: the report's statistics and plots load in seconds, and an import needs none.
    from clonechat.cli.analysis import format_size
    from clonechat.share.bundle import default_path, share_experiment
    from clonechat.share.private import Machine

    machine = Machine.current()  # a registry file that cannot be read stops it here, before anything is written
    target = out or default_path(experiment)
    with Database.open(db, create=False) as database:
        shared = share_experiment(database, experiment, target, machine)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"shared {escape(experiment)}: {escape(str(shared.path))} ({format_size(shared.size)})")
    redacted = {kind: n for kind, n in shared.redactions.items() if n}
    if redacted:
        details = ", ".join(f"{n} {kind.value}" for kind, n in redacted.items())
        console.print(f"{shared.dialogues} dialogues; redacted: {escape(details)} (counts in DATASHEET.md)")
    else:
        console.print(f"{shared.dialogues} dialogues; nothing private found to redact")
    return 0


def import_command(file: Path, db: DbLocation | str, as_name: str | None) -> int:
    """Import a share archive or JSONL export; say what was added, or that nothing was."""
    done = import_file(file, db_location(db), as_name=as_name)
    # The hint names the database unless it is the default (a server URL may hold a password:
    # it is never repeated).
    given = str(db)
    where = "" if given in (str(DEFAULT_DB), "") or "://" in given else f" --db {given}"
    Console(highlight=False, soft_wrap=True).print(escape(imported_line(done, where)))
    return 0


def imported_line(done: Imported, where: str = "") -> str:
    """What an import did, in one line (two when some dialogues differ)."""
    name = repr(done.experiment) + (f" (named {done.renamed_from!r} in the file)" if done.renamed_from else "")
    copied = done.copied
    differing = copied.differing
    if copied.rows_added:
        tables = ", ".join(f"{table} {count}" for table, count in copied.added.items() if count)
        line = (
            f"imported experiment {name} from {done.source} into {done.dest}: {done.dialogues} dialogues, "
            f"{copied.rows_added} rows ({tables}); see it with: clonechat report {done.experiment}{where}"
        )
    elif not differing:
        line = (
            f"nothing to add: {done.dest} already has experiment {name} from {done.source} "
            f"({done.dialogues} dialogues), every row of it"
        )
    else:
        line = f"nothing added: {done.dest} already has experiment {name} from {done.source}"
    if differing:
        some = "1 dialogue was" if len(differing) == 1 else f"{len(differing)} dialogues were"
        line += (
            f"\nnote: {some} already in {done.dest} in another state than in the file, and left as "
            f"{'it is' if len(differing) == 1 else 'they are'} there (first: {differing[0]})"
        )
    return line
