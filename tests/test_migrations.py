"""The migration path: a fresh database, one upgraded from every earlier version and the
SQLModel models agree; an upgrade keeps every row and gives the metrics, views and search of a
fresh database; shipped steps are frozen (recorded hashes, no live imports, and the frozen
metrics backfill gives exactly the rows the live metrics code gives)."""

from __future__ import annotations

import ast
import hashlib
import inspect
import shutil
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, event, text

from clonechat.store import migration_steps, migrations, turn_metrics
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


def test_reopening_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    Database.open(path).close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        assert migrations.migrate(conn) == []
    engine.dispose()


# --- frozen steps ---------------------------------------------------------------------------------

#: SHA-256 of each shipped step: its SQL, or a function step's source. A step that has shipped
#: never changes; a new step records its hash here when it ships.
#: Each shipped step's SHA-256 on each backend (a step with one script has the same on both).
SHIPPED_SHA256 = {
    1: {
        "sqlite": "712d0d773f490617facc97c0b595a4efca0ac6e8a408e9d15465a8473684f357",
        "postgresql": "c4966552505256c623106df7c1fe5a3746ea1574ee21dddf499448ce5d1e7ef1",
    },
    2: {
        "sqlite": "c3e67818db0067c99d5e2fee9e79431b191c519d4792124799e8c307e30ba3b0",
        "postgresql": "03f07105a5efc147b8353f31cd93d749562619c79b19689f2846e8a7b024bd25",
    },
    3: {
        "sqlite": "e4b17669f6dd03d0997680d9ea2ab62e5bd0c8b499e5382a218330c3dcfe567c",
        "postgresql": "e4b17669f6dd03d0997680d9ea2ab62e5bd0c8b499e5382a218330c3dcfe567c",
    },
    4: {
        "sqlite": "1a6d8b25d78c86878396a7766fb2f6487c34c9ba706ea312ff80c62bbc417bb4",
        "postgresql": "b29c777df83c6cc8431e893ef7b5c9be35b05a0c9d586d124fa4786b8214f5e2",
    },
    5: {
        "sqlite": "420fa5f0fb416eff45c8319c630fc6de87aac5e678acb5310db203cc80fb0253",
        "postgresql": "420fa5f0fb416eff45c8319c630fc6de87aac5e678acb5310db203cc80fb0253",
    },
    6: {
        "sqlite": "0e46b3ef88e441926c8fa7e99a2be073a74e09afc2e97197b321e9b6b146aa6e",
        "postgresql": "8e23f32e01e8ae9f6db4f33def89d909c4e28414388afa5d789fd762816bb578",
    },
    7: {
        "sqlite": "2f86233d308efc0395c259e51c01be5aeeb5475d7b7531b4c057551d80ccc0fc",
        "postgresql": "4e53ce61b0ad5bb2391a5ee191caada83f2e3fc27b1b1696ae2c18a54602546d",
    },
}
DIALECTS = ("sqlite", "postgresql")


def step_text(script: migrations.Script) -> str:
    return script if isinstance(script, str) else inspect.getsource(script)


def test_shipped_steps_are_unchanged() -> None:
    for number, (_description, step) in enumerate(migrations.MIGRATIONS, start=1):
        assert number in SHIPPED_SHA256, f"step {number} is new: record its SHA-256 in SHIPPED_SHA256 when it ships"
        for dialect in DIALECTS:
            digest = hashlib.sha256(step_text(migrations.script_for(step, dialect)).encode()).hexdigest()
            assert digest == SHIPPED_SHA256[number][dialect], (
                f"step {number} ({dialect}) has shipped: never edit it, append a new step"
            )


def test_every_step_lives_in_the_frozen_module() -> None:
    frozen = {id(value) for value in vars(migration_steps).values()}
    for number, (_description, step) in enumerate(migrations.MIGRATIONS, start=1):
        for dialect in DIALECTS:
            script = migrations.script_for(step, dialect)
            assert id(script) in frozen, f"step {number} ({dialect}) is not defined in clonechat.store.migration_steps"
            if callable(script):
                assert script.__module__ == migration_steps.__name__


def test_the_frozen_steps_import_no_live_code() -> None:
    """Only the standard library, SQLAlchemy and ``regex``, anywhere in the module (a step
    that imported the models, the metrics or the views would change with them)."""
    tree = ast.parse(Path(migration_steps.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None, "no relative imports"
            imported.add(node.module)
    assert imported, "the parse found the module's imports"
    allowed = set(sys.stdlib_module_names) | {"__future__", "sqlalchemy", "regex"}
    assert {name for name in imported if name.split(".")[0] not in allowed} == set()


# --- data as each schema version could hold it, in plain SQL ---------------------------------------

T0 = "2026-01-01 00:00:00.000000"

#: Turn contents that exercise every branch of the metric code: ASCII with and without
#: apostrophes, curly apostrophes, case folding that changes lengths, emoji sequences, CJK,
#: Unicode spaces, nothing visible, under three words, loops.
TEXTS = {
    "hello": "I'm glad to be here — let's talk about the café! 😀😀",
    "tis": "'Tis a fine day... isn't it? I’m here too; the café’s open.",
    "loop": "the the the the the the",
    "fold": "Straße STRASSE straße ß İstanbul ǅemal ﬁne",
    "emoji": "👍🏽 👨‍👩‍👧 🇩🇪 ✨✨✨ ok ok ok ©®™",
    "edit": "A researcher's edit: zyxwvutq?! isn't it 'quoted' -- dogs' toys",
    "cjk": "日本語のテキスト、句読点。and mixed ascii words",
    "blank": "   \t\n ",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ _under_score_ x_y",
    "accents": "naïve coöperate résumé RÉSUMÉ 123 4.5 x_y",
    "spaces": "Ok.\u00a0Ok.\u2003ok — 'ok' ‘ok’ “ok” ok’s",
    "quotes": "''' ’’ '",
    "two": "a b",
    "umlaut": "Ünïcödé ÜNÏCÖDÉ ünïcödé",
    "oks": "ok ok ok ok ok",
    "again": "hello world again",
    "again2": "hello world again and again",
}

#: node id, dialogue, parent, speaker, turn index, text key (or literal opening), model. In
#: insertion order (rowid): the second dialogue first, and branches interleaved, so the tree
#: walk's order and its copies of a branch's state are exercised.
TREE: list[tuple[str, str, str | None, str, int, str, str | None]] = [
    ("M00", "D2", None, "researcher", 0, "Say hello.", None),
    ("M01", "D2", "M00", "A", 1, "again", "m"),
    ("M02", "D2", "M01", "B", 2, "again", "n"),
    ("M03", "D2", "M02", "A", 3, "again2", "m"),
    ("N00", "D1", None, "researcher", 0, "Hello, you two. Talk about café culture ☕ cafeterias", None),
    ("N01", "D1", "N00", "A", 1, "hello", "m"),
    ("N02", "D1", "N01", "B", 2, "tis", "m"),
    ("N03E", "D1", "N02", "A", 3, "edit", "researcher-edit"),
    ("N03", "D1", "N02", "A", 3, "loop", "m"),
    ("N04", "D1", "N03", "B", 4, "fold", "m"),
    ("N04E", "D1", "N03E", "B", 4, "cjk", "m"),
    ("N05", "D1", "N04", "A", 5, "emoji", "m"),
    ("N05E", "D1", "N04E", "A", 5, "blank", "m"),
    ("N06E", "D1", "N05E", "B", 6, "punct", "m"),
    ("N01F", "D1", "N00", "B", 1, "accents", "m"),
    ("N06E2", "D1", "N05E", "A", 6, "oks", "researcher-edit"),
    ("N02F", "D1", "N01F", "A", 2, "spaces", "m"),
    ("N06", "D1", "N05", "B", 6, "quotes", "m"),
    ("N06E3", "D1", "N05E", "B", 6, "umlaut", "m"),
    ("N07", "D1", "N06", "A", 7, "two", "m"),
    ("N03F", "D1", "N02F", "B", 3, "loop", "m"),
]
TURN_IDS = [row[0] for row in TREE if row[3] != "researcher"]
HEADS = {"D1": "N07", "D2": "M03"}


def populate(conn: Connection, version: int) -> None:
    """What a database at schema ``version`` could hold, written the way that version's
    clonechat would have (plain SQL: today's writer knows columns old schemas lack)."""
    sql = conn.exec_driver_sql
    sql(f"INSERT INTO experiment VALUES ('E1', 'exp', 'name = \"exp\"', 'spechash', '{T0}')")
    sql(
        "INSERT INTO prompt_template VALUES (?, ?, ?, ?, ?)",
        [("PT1", "conditions", "clone-aware", "You talk to {{ other }}.", T0), ("PT2", "openings", "hi", "Hi.", T0)],
    )
    sql(
        "INSERT INTO condition VALUES (?, 'E1', ?, ?, ?, ?, ?, ?)",
        [
            ("C1", "clone-aware", "clone-aware", "m", "m", '{"temperature": 0.7}', T0),
            ("C2", "told-human", "told-human", "m", "n", "{}", T0),
        ],
    )
    sql(
        "INSERT INTO prompt VALUES (?, ?, ?, ?, ?)",
        [("PA", "PT1", "You talk to a copy of yourself.", '{"other": "a copy"}', T0), ("PO", "PT2", "Hi.", "{}", T0)],
    )
    sql(
        "INSERT INTO dialogue (id, condition_id, replicate, seed, status, stop_reason, error, first_speaker, "
        "max_turns, token_budget, stop_phrase, model_a, model_b, system_prompt_a, system_prompt_b, "
        "opening_prompt, settings, head_node_id, created_at, updated_at) "
        "VALUES (?, ?, 1, ?, ?, ?, NULL, 'A', 8, NULL, '^C^C', ?, ?, 'PA', 'PA', 'PO', ?, ?, ?, ?)",
        [
            ("D1", "C1", 7, "completed", "max_turns", "m", "m", '{"a": {"temperature": 0.7}}', HEADS["D1"], T0, T0),
            ("D2", "C2", None, "interrupted", None, "m", "n", "{}", HEADS["D2"], T0, T0),
        ],
    )
    node = (
        "INSERT INTO node (id, dialogue_id, parent_id, speaker, kind, turn_index, content, model, params, "
        "prompt_tokens, completion_tokens, latency_ms, finish_reason, error, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    for node_id, dialogue_id, parent, speaker, index, key, model in TREE:
        kind, content = ("opening", key) if speaker == "researcher" else ("turn", TEXTS[key])
        tokens = (10 * index, 5) if kind == "turn" else (None, None)
        sql(
            node,
            (
                node_id,
                dialogue_id,
                parent,
                speaker,
                kind,
                index,
                content,
                model,
                '{"temperature": 0.7}',
                *tokens,
                12.5 if kind == "turn" else None,
                "stop" if kind == "turn" else None,
                None,
                T0,
            ),
        )
    sql(node, ("NERR", "D1", "N05", "B", "error", 6, "", "m", "{}", None, None, None, None, "timeout", T0))
    if version >= 2:
        side = "variant, " if version >= 3 else ""
        sql(
            f"INSERT INTO node (id, dialogue_id, parent_id, speaker, kind, turn_index, content, model, params, "
            f"target_node_id, {side}created_at) VALUES (?, 'D1', 'N02', 'B', 'prediction', 3, ?, 'm', '{{}}', "
            f"'N03', {'?, ' if side else ''}?)",
            ("NP1", "I predict predictwordq the the", *(["partner"] if side else []), T0),
        )
        sql(
            "INSERT INTO score (node_id, scorer, version, value, detail, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                ("NP1", "jaccard", "1", 0.25, '{"against": "N03"}', T0),
                ("NP1", "jaccard~shuffled", "1", 0.125, '{"against": "N05"}', T0),
            ],
        )
    if version >= 3:
        for node_id, speaker, content in (("NCA", "A", "Blue!"), ("NCB", "B", "blue")):
            sql(
                "INSERT INTO node (id, dialogue_id, parent_id, speaker, kind, turn_index, content, model, params, "
                "variant, created_at) VALUES (?, 'D1', 'N02', ?, 'coordination', 2, ?, 'm', '{}', 'color@before', ?)",
                (node_id, speaker, content, T0),
            )
        sql(
            "INSERT INTO score (node_id, scorer, version, value, detail, created_at) "
            "VALUES (?, 'answer', '1', NULL, ?, ?)",
            [("NCA", '{"answer": "blue"}', T0), ("NCB", '{"answer": "blue"}', T0)],
        )
    if version >= 4:
        # That version's writer indexed what it stored, and computed metrics for new turns:
        # the metrics of version 1, which are what the frozen step computes.
        sql("INSERT INTO node_fts (rowid, content) SELECT rowid, content FROM node ORDER BY rowid")
        migration_steps.backfill_turn_metrics_v1(conn)
        if version == 4:  # D1's turns were stored before there were metrics: step 5 fills them in
            sql("DELETE FROM turn_metrics WHERE dialogue_id = 'D1'")


def make_database(path: Path, version: int) -> None:
    engine = create_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA foreign_keys = ON"))
    with engine.begin() as conn:
        assert migrations.migrate(conn, target=version) == list(range(1, version + 1))
        populate(conn, version)
    engine.dispose()


def snapshot(path: Path) -> dict[str, tuple[list[str], dict[int, tuple[object, ...]]]]:
    """Every table's columns and rows by rowid (the migration bookkeeping and the search
    index's shadow tables aside)."""
    with closing(sqlite3.connect(path)) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "AND name != 'clonechat_migrations' AND name NOT LIKE 'node_fts%'"
            )
        ]
        out: dict[str, tuple[list[str], dict[int, tuple[object, ...]]]] = {}
        for table in tables:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info('{table}')")]
            rows = {r[0]: tuple(r[1:]) for r in conn.execute(f"SELECT rowid, * FROM {table}")}
            out[table] = (columns, rows)
        return out


def live_metrics(path: Path) -> dict[str, dict[str, object]]:
    """Each turn's metrics as today's ``turn_metrics`` computes them, replaying its path."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            turns = conn.execute(
                text("SELECT id, dialogue_id, parent_id, speaker, content FROM node WHERE kind = 'turn'")
            ).all()
            out: dict[str, dict[str, object]] = {}
            for node_id, dialogue_id, parent_id, speaker, content in turns:
                metrics = turn_metrics.state_after(conn, parent_id).advance(node_id, dialogue_id, speaker, content)
                out[node_id] = {name: getattr(metrics, name) for name in turn_metrics.TurnMetrics.__dataclass_fields__}
            return out
    finally:
        engine.dispose()


def query(path: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def search(path: Path, words: str) -> set[Any]:
    found = query(
        path, "SELECT n.id FROM node_fts JOIN node n ON n.rowid = node_fts.rowid WHERE node_fts MATCH ?", words
    )
    return {r[0] for r in found}


# --- the frozen backfill against today's metrics ------------------------------------------------


@pytest.mark.parametrize("partial", [False, True], ids=["no-metrics", "some-metrics"])
def test_frozen_backfill_gives_the_rows_live_metrics_give(tmp_path: Path, partial: bool) -> None:
    """The frozen step 5 writes exactly the rows (values, types, order) that
    ``turn_metrics.backfill`` writes, on a forked dialogue with varied text."""
    if turn_metrics.METRICS_VERSION != 1:
        pytest.skip("the live metrics moved past version 1; the frozen copy stays pinned by its SHA-256")
    frozen, live = tmp_path / "frozen.db", tmp_path / "live.db"
    make_database(frozen, 4)
    if not partial:
        with closing(sqlite3.connect(frozen)) as conn:
            conn.execute("DELETE FROM turn_metrics")
            conn.commit()
    shutil.copy(frozen, live)
    before = len(query(frozen, "SELECT * FROM turn_metrics"))
    assert before == (3 if partial else 0)  # D2's turns
    for path, backfill in ((frozen, migration_steps.backfill_turn_metrics_v1), (live, turn_metrics.backfill)):
        engine = create_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            assert backfill(conn) == len(TURN_IDS) - before
        engine.dispose()
    columns = [r[1] for r in query(frozen, "PRAGMA table_info('turn_metrics')")]
    dump = f"SELECT rowid, {', '.join(f'{c}, typeof({c})' for c in columns)} FROM turn_metrics ORDER BY rowid"
    assert query(frozen, dump) == query(live, dump)
    assert len(query(frozen, dump)) == len(TURN_IDS)


# --- upgrading a database of every earlier version ---------------------------------------------


@pytest.mark.parametrize("version", range(1, migrations.SCHEMA_VERSION))
def test_a_database_of_every_earlier_version_upgrades_whole(tmp_path: Path, version: int) -> None:
    old = tmp_path / "old.db"
    make_database(old, version)
    before = snapshot(old)
    assert {table: len(rows) for table, (_, rows) in before.items() if rows} == {
        "experiment": 1,
        "prompt_template": 2,
        "condition": 2,
        "prompt": 2,
        "dialogue": 2,
        "node": len(TREE) + 1 + (version >= 2) + 2 * (version >= 3),
        **({"score": 2 + 2 * (version >= 3)} if version >= 2 else {}),
        **({"turn_metrics": 3 if version == 4 else len(TURN_IDS)} if version >= 4 else {}),
    }

    Database.open(old).close()  # upgrades

    fresh = tmp_path / "fresh.db"
    Database.open(fresh).close()
    assert schema_of(old) == schema_of(fresh)
    objects = "SELECT type, name, sql FROM sqlite_master WHERE type IN ('view', 'trigger') ORDER BY name"
    assert query(old, objects) == query(fresh, objects)
    assert query(old, "SELECT version FROM clonechat_migrations ORDER BY version") == [
        (v,) for v in range(1, migrations.SCHEMA_VERSION + 1)
    ]
    assert query(old, "PRAGMA integrity_check") == [("ok",)]
    assert query(old, "PRAGMA foreign_key_check") == []

    # Every row survives unchanged; columns added since are NULL in it.
    after = snapshot(old)
    for table, (columns, rows) in before.items():
        new_columns, new_rows = after[table]
        kept = {
            rowid: tuple(dict(zip(new_columns, row, strict=True))[c] for c in columns)
            for rowid, row in new_rows.items()
        }
        assert {rowid: kept[rowid] for rowid in rows} == rows, table
        if table != "turn_metrics":
            assert len(new_rows) == len(rows), table
        added = [i for i, c in enumerate(new_columns) if c not in columns]
        assert all(new_rows[rowid][i] is None for rowid in rows for i in added), table

    # Every turn has the metrics today's code computes for it.
    metrics_columns, metrics_rows = after["turn_metrics"]
    stored = {row[0]: dict(zip(metrics_columns, row, strict=True)) for row in metrics_rows.values()}
    assert set(stored) == set(TURN_IDS) and len(metrics_rows) == len(TURN_IDS)
    assert stored == live_metrics(old)

    # The views answer.
    dialogues = query(old, "SELECT dialogue_id, turns, turn_nodes FROM v_dialogue ORDER BY dialogue_id")
    assert dialogues == [("D1", 7, sum(r[1] == "D1" for r in TREE) - 1), ("D2", 3, 3)]
    leaves = {r[0] for r in TREE} - {r[2] for r in TREE}
    assert {r[0] for r in query(old, "SELECT path_id FROM v_path")} == leaves
    head_path = {r[0] for r in query(old, "SELECT node_id FROM v_path WHERE is_head AND dialogue_id = 'D1'")}
    assert head_path == {f"N0{i}" for i in range(8)}
    turns = query(old, "SELECT node_id, on_head, edited, chars FROM v_turn")
    assert sorted(r[0] for r in turns) == sorted(TURN_IDS)
    assert all(r[3] is not None for r in turns)
    assert {r[0] for r in turns if r[1]} == (head_path - {"N00"}) | {"M01", "M02", "M03"}
    assert {r[0] for r in turns if r[2]} == {"N03E", "N06E2"}
    predictions = query(
        old, "SELECT prediction_id, target_id, variant, scorer, value, shuffled_value FROM v_prediction"
    )
    variant = "partner" if version >= 3 else None
    assert predictions == ([("NP1", "N03", variant, "jaccard", 0.25, 0.125)] if version >= 2 else [])
    coordination = query(old, "SELECT dialogue_id, task, phase, answer_a, answer_b, matched FROM v_coordination")
    assert coordination == ([("D1", "color", "before", "blue", "blue", 1)] if version >= 3 else [])

    # Full-text search finds what was stored before the upgrade (diacritics folded).
    assert search(old, "zyxwvutq") == {"N03E"}
    assert search(old, "cafe") == {"N00", "N01", "N02"}
    assert search(old, "predictwordq") == ({"NP1"} if version >= 2 else set())
    assert search(old, "blue") == ({"NCA", "NCB"} if version >= 3 else set())
    query(old, "INSERT INTO node_fts (node_fts) VALUES ('integrity-check')")
