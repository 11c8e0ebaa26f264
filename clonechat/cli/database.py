"""``clonechat db copy``: experiments from one run database into another.

Registered on ``db_app`` (``clonechat db ...``) when :mod:`clonechat.cli` imports this module.
As in :mod:`clonechat.cli.app`, the command imports what it runs when it runs, so ``--help``
loads no SQLAlchemy. The work is :func:`clonechat.store.copy.copy_experiments`; this module
only checks the arguments, opens the two databases and prints a line per experiment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from clonechat.cli.app import db_app
from clonechat.cli.errors import report_errors

if TYPE_CHECKING:
    from clonechat.location import DbLocation
    from clonechat.store.copy import ExperimentCopy


@db_app.command("copy")
def copy_database(
    src: Annotated[
        str, typer.Argument(metavar="SRC", help="Database to copy from (a file or postgresql:// URL); only read.")
    ],
    dst: Annotated[
        str,
        typer.Argument(metavar="DST", help="Database to copy into (a file or postgresql:// URL); created if needed."),
    ],
    experiment: Annotated[
        list[str] | None,
        typer.Option("--experiment", "-e", metavar="NAME", help="Copy only this experiment (repeatable)."),
    ] = None,
) -> None:
    """Copy experiments from SRC into DST: a pilot to the team's server, or back.

    Every experiment, or those named. What an experiment is made of is copied exactly:
    conditions, prompts, dialogues with every node, turn metrics and scores (batch workers and
    their leases are not). SRC is only read. DST is written a few dialogues per transaction, so
    an interrupted copy leaves whole dialogues and running it again finishes it; a second copy
    adds nothing. A name DST gives another experiment is refused."""

    def go() -> None:
        from clonechat.errors import ConfigError
        from clonechat.location import db_location
        from clonechat.read.connect import open_existing
        from clonechat.store.copy import copy_experiments, experiments_to_copy, same_database
        from clonechat.store.database import Database

        source, dest = db_location(src), db_location(dst)
        if same_database(source, dest):
            raise ConfigError(f"SRC and DST are the same database ({source}): nothing to copy")
        with open_existing(source) as reader:
            # Checked before DST is opened: a typo never creates (or migrates) a database.
            names = experiments_to_copy(reader, experiment)
            if not names:
                print(f"{source} has no experiments: nothing to copy")
                return
            with Database.open(dest) as database:
                copy_experiments(reader, database, names, on_copied=lambda done: print(copied_line(done, dest)))

    report_errors(go)


def copied_line(done: ExperimentCopy, dest: DbLocation) -> str:
    """One experiment's line: the rows added to ``dest`` per table (only those that grew), and
    the dialogues ``dest`` already had in another state (left as they are there)."""
    if done.rows_added:
        tables = ", ".join(f"{table} {count}" for table, count in done.added.items() if count)
        line = f"{done.name}: {done.rows_added} {_plural(done.rows_added, 'row')} added to {dest} ({tables})"
    else:
        line = f"{done.name}: nothing to add, {dest} has all of it"
    differing = done.differing
    if len(differing) == 1:
        line += f"; 1 dialogue differs in {dest} and was left as it is there ({differing[0]})"
    elif differing:
        line += f"; {len(differing)} dialogues differ in {dest} and were left as they are there (first: {differing[0]})"
    return line


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"
