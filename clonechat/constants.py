"""Names and defaults the command line needs before it does anything.

They live here, in a module that imports nothing but :mod:`pathlib`, because ``clonechat
--help`` has to show them: typer reads every option's default when the CLI module is
imported, and the modules these values belong to (the store, the engine, the session, the
model registry) pull in SQLAlchemy, SQLModel, anyio and the providers. The CLI takes them from
here so that ``--help`` and ``query`` start in a fraction of the time.
"""

from __future__ import annotations

from pathlib import Path

#: The run database when neither ``--db`` nor ``$CLONECHAT_DB`` names one.
DEFAULT_DB = Path("runs") / "clonechat.db"
#: The environment variable naming the run database.
DB_ENV_VAR = "CLONECHAT_DB"
#: The schema this clonechat reads and writes: the number of migration steps. Readers check a
#: file against it without loading SQLAlchemy; ``store.migrations`` refuses to import if its
#: step list and this number disagree, so the two cannot drift apart.
SCHEMA_VERSION = 9
#: How long SQLite waits on a lock held by another process (a running batch) before failing.
BUSY_TIMEOUT_MS = 10_000

#: Either agent ends a dialogue by writing this (``--stop-phrase``).
DEFAULT_STOP_PHRASE = "^C^C"
#: The experiment a dialogue is filed under when none is named (``clonechat run``).
ADHOC_EXPERIMENT = "adhoc"
#: The environment variable naming an extra model registry file (``--models-file``).
MODELS_ENV_VAR = "CLONECHAT_MODELS"
