"""Versioned schema migrations: a list of frozen SQL steps, applied in order, each once.

Never edit a step that has shipped; append a new one. ``tests/test_migrations.py`` checks that
a fresh database, an upgraded one and ``SQLModel.metadata`` all describe the same schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from sqlalchemy import Connection, text

from clonechat.store import turn_metrics
from clonechat.store.views import VIEWS_V1

#: A step is SQL (statements run in order) or a function for what SQL cannot do (a backfill).
Step = str | Callable[[Connection], object]

MIGRATIONS: list[tuple[str, Step]] = [
    (
        "core tables: experiments, conditions, prompts, dialogues, node tree",
        """
CREATE TABLE experiment (
    id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    spec VARCHAR,
    spec_hash VARCHAR,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (name)
);
CREATE TABLE prompt_template (
    hash VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (hash)
);
CREATE TABLE condition (
    id VARCHAR NOT NULL,
    experiment_id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    template VARCHAR NOT NULL,
    model_a VARCHAR NOT NULL,
    model_b VARCHAR NOT NULL,
    settings JSON NOT NULL,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (experiment_id, name),
    FOREIGN KEY(experiment_id) REFERENCES experiment (id)
);
CREATE INDEX ix_condition_experiment_id ON condition (experiment_id);
CREATE TABLE prompt (
    hash VARCHAR NOT NULL,
    template_hash VARCHAR NOT NULL,
    text VARCHAR NOT NULL,
    variables JSON NOT NULL,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (hash),
    FOREIGN KEY(template_hash) REFERENCES prompt_template (hash)
);
CREATE INDEX ix_prompt_template_hash ON prompt (template_hash);
CREATE TABLE dialogue (
    id VARCHAR NOT NULL,
    condition_id VARCHAR NOT NULL,
    replicate INTEGER NOT NULL,
    seed INTEGER,
    status VARCHAR NOT NULL,
    stop_reason VARCHAR,
    error VARCHAR,
    first_speaker VARCHAR NOT NULL,
    max_turns INTEGER NOT NULL,
    token_budget INTEGER,
    stop_phrase VARCHAR,
    model_a VARCHAR NOT NULL,
    model_b VARCHAR NOT NULL,
    system_prompt_a VARCHAR NOT NULL,
    system_prompt_b VARCHAR NOT NULL,
    opening_prompt VARCHAR NOT NULL,
    settings JSON NOT NULL,
    head_node_id VARCHAR,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (condition_id, replicate),
    FOREIGN KEY(condition_id) REFERENCES condition (id),
    FOREIGN KEY(system_prompt_a) REFERENCES prompt (hash),
    FOREIGN KEY(system_prompt_b) REFERENCES prompt (hash),
    FOREIGN KEY(opening_prompt) REFERENCES prompt (hash)
);
CREATE INDEX ix_dialogue_condition_id ON dialogue (condition_id);
CREATE INDEX ix_dialogue_status ON dialogue (status);
CREATE TABLE node (
    id VARCHAR NOT NULL,
    dialogue_id VARCHAR NOT NULL,
    parent_id VARCHAR,
    speaker VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    turn_index INTEGER NOT NULL,
    content VARCHAR NOT NULL,
    model VARCHAR,
    params JSON NOT NULL,
    prompt_tokens INTEGER,
    prompt_tokens_evaluated INTEGER,
    prompt_tokens_cached INTEGER,
    completion_tokens INTEGER,
    time_to_first_token_ms FLOAT,
    latency_ms FLOAT,
    finish_reason VARCHAR,
    error VARCHAR,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(dialogue_id) REFERENCES dialogue (id),
    FOREIGN KEY(parent_id) REFERENCES node (id)
);
CREATE INDEX ix_node_dialogue_id ON node (dialogue_id);
CREATE INDEX ix_node_parent_id ON node (parent_id);
""",
    ),
    (
        "scores, and predictions linked to the turn they predict",
        """
ALTER TABLE node ADD COLUMN target_node_id VARCHAR REFERENCES node (id);
CREATE INDEX ix_node_target_node_id ON node (target_node_id);
CREATE TABLE score (
    id INTEGER NOT NULL,
    node_id VARCHAR NOT NULL,
    scorer VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    value FLOAT,
    detail JSON NOT NULL,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (node_id, scorer, version),
    FOREIGN KEY(node_id) REFERENCES node (id)
);
CREATE INDEX ix_score_node_id ON score (node_id);
""",
    ),
    (
        "side-channel variants: which prediction, which coordination task",
        """
ALTER TABLE node ADD COLUMN variant VARCHAR;
""",
    ),
    (
        "per-turn conversation metrics, and full-text search over node content",
        """
CREATE TABLE turn_metrics (
    node_id VARCHAR NOT NULL,
    dialogue_id VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    chars INTEGER NOT NULL,
    words INTEGER NOT NULL,
    distinct_words INTEGER NOT NULL,
    new_words INTEGER NOT NULL,
    vocabulary INTEGER NOT NULL,
    overlap_partner FLOAT,
    overlap_self FLOAT,
    repetition FLOAT,
    symbol_rate FLOAT NOT NULL,
    emoji_rate FLOAT NOT NULL,
    PRIMARY KEY (node_id),
    FOREIGN KEY(node_id) REFERENCES node (id),
    FOREIGN KEY(dialogue_id) REFERENCES dialogue (id)
);
CREATE INDEX ix_turn_metrics_dialogue_id ON turn_metrics (dialogue_id);
CREATE VIRTUAL TABLE node_fts USING fts5(
    content, content="node", content_rowid="rowid", tokenize="unicode61 remove_diacritics 2"
);
CREATE TRIGGER node_fts_delete AFTER DELETE ON node BEGIN
    INSERT INTO node_fts (node_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;
CREATE TRIGGER node_fts_update AFTER UPDATE OF content ON node BEGIN
    INSERT INTO node_fts (node_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
    INSERT INTO node_fts (rowid, content) VALUES (new.rowid, new.content);
END;
INSERT INTO node_fts (node_fts) VALUES ('rebuild');
""",
    ),
    ("metrics for the turns stored before there were metrics", turn_metrics.backfill),
    ("views for the common questions", VIEWS_V1),
]

SCHEMA_VERSION = len(MIGRATIONS)


def statements(script: str) -> list[str]:
    """The statements of an SQL script, split where SQLite says a statement is complete (a
    trigger's body has semicolons of its own)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip().rstrip(";"))
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


_VERSION_TABLE = "clonechat_migrations"


def current_version(conn: Connection) -> int:
    exists = conn.execute(
        text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"), {"name": _VERSION_TABLE}
    ).first()
    if exists is None:
        return 0
    return int(conn.execute(text(f"SELECT COALESCE(MAX(version), 0) FROM {_VERSION_TABLE}")).scalar_one())


def user_tables(conn: Connection) -> list[str]:
    rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))
    return [str(row[0]) for row in rows]


def migrate(conn: Connection, target: int = SCHEMA_VERSION) -> list[int]:
    """Apply pending steps up to ``target`` inside the caller's transaction; return those applied."""
    conn.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {_VERSION_TABLE} ("
            "version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, applied_at DATETIME NOT NULL)"
        )
    )
    applied: list[int] = []
    version = current_version(conn)
    for number, (description, script) in enumerate(MIGRATIONS[:target], start=1):
        if number <= version:
            continue
        if callable(script):
            script(conn)
        else:
            for statement in statements(script):
                conn.exec_driver_sql(statement)
        conn.execute(
            text(f"INSERT INTO {_VERSION_TABLE} (version, description, applied_at) VALUES (:v, :d, datetime('now'))"),
            {"v": number, "d": description},
        )
        applied.append(number)
    return applied
