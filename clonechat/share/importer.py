"""``clonechat import``: a share archive (or a plain JSONL export) into a run database, as an
experiment of its own.

1. The file is verified first (:func:`clonechat.share.archive.open_data`: the manifest, every
   member's size and SHA-256), and nothing is opened for writing until it checks out.
2. Its rows are loaded into a temporary SQLite run database made by the store's normal
   ``Database.open(..., create=True)``, so it has this clonechat's schema and every row is checked
   (:mod:`clonechat.share.records`); ``--as`` renames the experiment there.
3. The destination is asked whether it already holds the experiment (by id) or another one of
   that name; either is refused with one line saying what to do.
4. The experiment is copied in with ``clonechat db copy``'s machinery
   (:func:`clonechat.store.copy.copy_experiments`): whole dialogues per transaction, every row
   ``ON CONFLICT DO NOTHING`` by its natural key, the full-text index updated in the same
   transaction. So an interrupted import is finished by running it again, and importing the same
   archive twice adds nothing the second time.

Rows keep their ids (ULIDs): the seeded statistics reproduce exactly, and one database holds an
experiment once, under one name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from clonechat.errors import ConfigError
from clonechat.location import DbLocation
from clonechat.read.experiments import experiment_names, find_experiment, free_name
from clonechat.share.archive import open_data
from clonechat.share.records import Loaded, load_records
from clonechat.store.copy import ExperimentCopy, copy_experiments
from clonechat.store.database import Database

#: What ``--as`` accepts: an experiment name as a spec's ``name`` may be.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,99}$")


@dataclass(frozen=True)
class Imported:
    """What :func:`import_file` did."""

    source: Path
    dest: DbLocation
    experiment: str
    experiment_id: str
    #: The experiment's name in the file, when ``--as`` gave it another.
    renamed_from: str | None
    dialogues: int
    copied: ExperimentCopy


def import_file(path: Path, dest: DbLocation, *, as_name: str | None = None) -> Imported:
    """Import the share archive or JSONL export at ``path`` into ``dest`` (created if need be)."""
    if as_name is not None and not NAME_PATTERN.match(as_name):
        raise ConfigError(
            f"--as {as_name!r}: an experiment name is letters, digits and _.:+- (starting with a letter "
            "or digit), at most 100 characters"
        )
    with (
        TemporaryDirectory(prefix="clonechat-import-") as temporary,
        open_data(path) as data,
        Database.open(Path(temporary) / "import.db") as staging,
    ):
        loaded = load_records(data.lines, staging, label=data.label, rename=as_name)
        if data.manifest is not None and (data.manifest.experiment_id, data.manifest.experiment) != (
            loaded.experiment_id,
            loaded.original_name,
        ):
            raise ConfigError(
                f"{path}: manifest.json names experiment {data.manifest.experiment!r} "
                f"({data.manifest.experiment_id}), but its data holds {loaded.original_name!r} "
                f"({loaded.experiment_id})"
            )
        with Database.open(dest) as database:
            _refuse_clash(database, loaded, path)
            summary = copy_experiments(staging, database, [loaded.name])
    return Imported(
        source=path,
        dest=database.path,
        experiment=loaded.name,
        experiment_id=loaded.experiment_id,
        renamed_from=loaded.original_name if loaded.name != loaded.original_name else None,
        dialogues=loaded.dialogues,
        copied=summary.experiments[0],
    )


def _refuse_clash(database: Database, loaded: Loaded, path: Path) -> None:
    """Refuse, in one line, an import that would merge two experiments: the destination holds
    this experiment under another name, another experiment under this name, or this one with
    another spec text (the sharer's own database: the archive's spec had private values taken
    out)."""
    where = database.path
    for name in experiment_names(database):
        found = find_experiment(database, name)
        if found is not None and found.id == loaded.experiment_id and name != loaded.name:
            raise ConfigError(
                f"{where} already holds the experiment of {path} (id {loaded.experiment_id}) under the name "
                f"{name!r}: nothing imported (to add what the file has that it lacks: --as {name})"
            )
    same_name = find_experiment(database, loaded.name)
    if same_name is None:
        return
    if same_name.id != loaded.experiment_id:
        raise ConfigError(
            f"{where} already has another experiment named {loaded.name!r}: import this one under another "
            f"name with --as {free_name(database, loaded.name)}"
        )
    if (same_name.spec, same_name.spec_hash) != (loaded.spec, loaded.spec_hash):
        raise ConfigError(
            f"{where} already has experiment {loaded.name!r} (id {loaded.experiment_id}) with another spec text "
            "(is it the database the archive was shared from? its spec had private values redacted): "
            "nothing imported"
        )
