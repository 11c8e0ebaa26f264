"""The migration path: a fresh database, an upgraded one and the SQLModel models agree."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine

from clonechat.store import migrations
from clonechat.store.database import Database
from clonechat.store.models import SQLModel


def schema_of(path: Path) -> dict[str, object]:
    """Tables, columns, indexes and foreign keys, normalised so column order and index
    names (which differ between CREATE TABLE ... UNIQUE and CREATE UNIQUE INDEX) do not matter."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                "AND name != 'clonechat_migrations' AND name NOT LIKE 'node_fts%' ORDER BY name"
            )
        ]
        schema: dict[str, object] = {}
        for table in tables:
            columns = sorted((r[1], r[2].upper(), r[3], r[5]) for r in conn.execute(f"PRAGMA table_info('{table}')"))
            indexes = sorted(
                (bool(r[2]), tuple(c[2] for c in conn.execute(f"PRAGMA index_info('{r[1]}')")))
                for r in conn.execute(f"PRAGMA index_list('{table}')")
            )
            fks = sorted((r[2], r[3], r[4]) for r in conn.execute(f"PRAGMA foreign_key_list('{table}')"))
            schema[table] = {"columns": columns, "indexes": indexes, "foreign_keys": fks}
        return schema
    finally:
        conn.close()


def test_fresh_database_matches_models(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    Database.open(fresh).close()
    reference = tmp_path / "models.db"
    engine = create_engine(f"sqlite:///{reference}")
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    assert schema_of(fresh) == schema_of(reference)


def test_upgraded_database_matches_fresh_and_keeps_data(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{old}")
    with engine.begin() as conn:
        migrations.migrate(conn, target=1)
        conn.exec_driver_sql(
            "INSERT INTO experiment (id, name, created_at) VALUES ('E1', 'kept', '2026-01-01 00:00:00')"
        )
    engine.dispose()
    assert "score" not in schema_of(old)

    Database.open(old).close()  # upgrades
    fresh = tmp_path / "fresh.db"
    Database.open(fresh).close()
    assert schema_of(old) == schema_of(fresh)
    with sqlite3.connect(old) as conn:
        assert conn.execute("SELECT name FROM experiment").fetchall() == [("kept",)]
        versions = [r[0] for r in conn.execute("SELECT version FROM clonechat_migrations ORDER BY version")]
    assert versions == list(range(1, migrations.SCHEMA_VERSION + 1))


def test_reopening_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    Database.open(path).close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        assert migrations.migrate(conn) == []
    engine.dispose()
