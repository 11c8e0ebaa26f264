"""The shipped migration steps, frozen: each step's SQL, and the one backfill, as they shipped.

A step's effect on an old database must never change, so nothing here may follow the live code:
this module imports nothing from clonechat (the standard library, SQLAlchemy and ``regex``
only), and nothing in it is edited once shipped. A changed table, view or metric definition is a
new step, appended here and to ``clonechat.store.migrations.MIGRATIONS``. ``tests/test_migrations.py``
checks the imports and records each shipped step's SHA-256.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

#: Step 1: experiments, conditions, prompts, dialogues, the node tree.
CORE_TABLES = """
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
"""

#: Step 2: scores, and a prediction's link to the turn it predicts.
SCORES_AND_TARGETS = """
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
"""

#: Step 3: side-channel variants (which prediction, which coordination task).
VARIANTS = """
ALTER TABLE node ADD COLUMN variant VARCHAR;
"""

#: Step 4: the per-turn metrics table, and full-text search over node content.
TURN_METRICS_AND_SEARCH = """
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
"""


_Words = frozenset[str]
_Trigrams = frozenset[tuple[str, str, str]]
#: Step 5's path state: the path's vocabulary, and each speaker's latest turn (its words and trigrams).
_State = tuple[set[str], dict[str, tuple[_Words, _Trigrams]]]


def backfill_turn_metrics_v1(conn: Connection) -> int:
    """Step 5: ``turn_metrics`` rows for every stored turn that has none (a database from before
    metrics), each dialogue's tree walked once from its root, a branch copying its parent's state.

    Frozen at METRICS_VERSION 1: this is the metric computation of ``clonechat.store.turn_metrics``
    as it was when the step shipped, written out here whole, with the columns step 4 creates. It
    must never follow ``turn_metrics.py``: an upgraded database gets the numbers it would have got
    the day the step shipped, in the columns that exist at this point of the upgrade (a later
    metric, or a changed definition, is a new step and a new version number).

    Definitions (version 1). Words are case-folded runs of letters, digits, ``_`` and apostrophes,
    without apostrophes at their ends; the path is the agent turns from the opening down to this
    turn. ``chars``, ``words``, ``distinct_words``: of the turn. ``new_words``: distinct words not
    used earlier on the path; ``vocabulary``: distinct words on the path including this turn.
    ``overlap_partner``, ``overlap_self``: Jaccard similarity of the word sets with the partner's
    latest turn and the speaker's previous one (NULL if none). ``repetition``: share of the turn's
    word trigrams already seen, earlier in the turn or in either agent's latest turn (NULL under
    three words). ``symbol_rate``, ``emoji_rate``: share of non-space characters that are
    punctuation or symbols (Unicode P* and S*, emoji excepted), and emoji (Extended_Pictographic).
    """
    import regex  # imported on use: only a database from before metrics needs it

    word_run = regex.compile(r"[\w'’]+")
    # Every ASCII character that is not a letter, digit, ``_`` or apostrophe becomes a space.
    ascii_word_breaks = str.maketrans({c: " " for c in range(128) if not (chr(c).isalnum() or chr(c) in "_'")})
    # One pass over the text: an emoji fills the group, any other punctuation or symbol leaves it empty.
    symbol_or_emoji = regex.compile(r"(\p{Extended_Pictographic})|[\p{P}\p{S}]")
    # ASCII's punctuation and symbols (Unicode P* and S*; string.punctuation), for plain-ASCII turns.
    delete_ascii_symbols = str.maketrans("", "", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")

    def words_of(content: str) -> list[str]:
        folded = content.casefold()
        runs: list[str] = folded.translate(ascii_word_breaks).split() if folded.isascii() else word_run.findall(folded)
        if "'" not in folded and "’" not in folded:
            return runs
        return [word for run in runs if (word := run.strip("'’"))]

    def jaccard(a: _Words, b: _Words) -> float | None:
        union = len(a | b)
        return len(a & b) / union if union else None

    def character_rates(content: str) -> tuple[float, float]:
        visible = len("".join(content.split()))
        if visible == 0:
            return 0.0, 0.0
        if content.isascii():
            return (len(content) - len(content.translate(delete_ascii_symbols))) / visible, 0.0
        found = symbol_or_emoji.findall(content)
        emoji = sum(1 for group in found if group)
        return (len(found) - emoji) / visible, emoji / visible

    def advance(state: _State, node_id: str, dialogue_id: str, speaker: str, content: str) -> tuple[object, ...]:
        """The row of a turn said on this path; the state moves past it."""
        vocabulary, latest = state
        words = words_of(content)
        distinct = frozenset(words)
        trigrams: _Trigrams = frozenset(zip(words, words[1:], words[2:], strict=False))
        partner = next((said for s, said in latest.items() if s != speaker), None)
        own = latest.get(speaker)
        new = distinct - vocabulary
        # Of the turn's trigrams, every occurrence but the first of one new to the latest turns repeats.
        count = len(words) - 2
        earlier: _Trigrams = frozenset().union(*(said[1] for said in latest.values()))
        symbol_rate, emoji_rate = character_rates(content)
        row = (
            node_id,
            dialogue_id,
            1,  # version
            len(content),  # chars
            len(words),  # words
            len(distinct),  # distinct_words
            len(new),  # new_words
            len(vocabulary) + len(new),  # vocabulary
            jaccard(distinct, partner[0]) if partner is not None else None,  # overlap_partner
            jaccard(distinct, own[0]) if own is not None else None,  # overlap_self
            (count - len(trigrams - earlier)) / count if count > 0 else None,  # repetition
            symbol_rate,
            emoji_rate,
        )
        vocabulary |= new
        latest[speaker] = (distinct, trigrams)
        return row

    nodes = conn.execute(
        text(
            "SELECT n.id, n.dialogue_id, n.parent_id, n.speaker, n.kind, n.content FROM node n "
            "WHERE n.kind IN ('opening', 'turn') ORDER BY n.dialogue_id, n.rowid"
        )
    ).all()
    children: dict[str | None, list[tuple[str, str, str, str, str]]] = {}
    for node_id, dialogue_id, parent_id, speaker, kind, content in nodes:
        children.setdefault(parent_id, []).append((node_id, dialogue_id, speaker, kind, content))
    done = {r[0] for r in conn.execute(text("SELECT node_id FROM turn_metrics"))}
    out: list[tuple[object, ...]] = []
    stack: list[tuple[str, _State]] = [(root[0], (set(), {})) for root in children.get(None, [])]
    while stack:
        node_id, state = stack.pop()
        kids = children.get(node_id, [])
        for i, (child_id, dialogue_id, speaker, kind, content) in enumerate(kids):
            # The last child may take the state over; the others need their own copy.
            child_state = state if i == len(kids) - 1 else (set(state[0]), dict(state[1]))
            if kind == "turn":
                row = advance(child_state, child_id, dialogue_id, speaker, content)
                if child_id not in done:
                    out.append(row)
            stack.append((child_id, child_state))
    if out:
        conn.exec_driver_sql(
            "INSERT INTO turn_metrics (node_id, dialogue_id, version, chars, words, distinct_words, new_words, "
            "vocabulary, overlap_partner, overlap_self, repetition, symbol_rate, emoji_rate) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            out,
        )
    return len(out)


#: Step 6: the views for the common questions (``clonechat.store.views.VIEW_DOCS`` documents them).
VIEWS_V1 = """
CREATE VIEW v_dialogue AS
SELECT d.id AS dialogue_id, e.name AS experiment, c.name AS condition, c.template, d.replicate, d.seed,
       d.status, d.stop_reason, d.error, d.first_speaker, d.model_a, d.model_b,
       (d.model_a = d.model_b) AS clone_pair,
       COALESCE(h.turn_index, 0) AS turns, d.max_turns,
       (SELECT count(*) FROM node t WHERE t.dialogue_id = d.id AND t.kind = 'turn') AS turn_nodes,
       d.head_node_id, d.created_at, d.updated_at
FROM dialogue d
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN node h ON h.id = d.head_node_id;

CREATE VIEW v_path AS
WITH RECURSIVE leaf(id, dialogue_id, parent_id) AS (
    SELECT n.id, n.dialogue_id, n.parent_id FROM node n
    WHERE n.kind IN ('opening', 'turn')
      AND NOT EXISTS (SELECT 1 FROM node k WHERE k.parent_id = n.id AND k.kind IN ('opening', 'turn'))
),
up(path_id, dialogue_id, node_id, parent_id) AS (
    SELECT id, dialogue_id, id, parent_id FROM leaf
    UNION ALL
    SELECT up.path_id, up.dialogue_id, n.id, n.parent_id FROM up JOIN node n ON n.id = up.parent_id
)
SELECT up.dialogue_id, up.path_id, (d.head_node_id IS up.path_id) AS is_head,
       n.turn_index, n.id AS node_id, n.speaker, n.kind, n.model, n.content
FROM up
JOIN node n ON n.id = up.node_id
JOIN dialogue d ON d.id = up.dialogue_id;

CREATE VIEW v_turn AS
WITH RECURSIVE head(node_id, parent_id) AS (
    SELECT n.id, n.parent_id FROM dialogue d JOIN node n ON n.id = d.head_node_id
    UNION ALL
    SELECT n.id, n.parent_id FROM head JOIN node n ON n.id = head.parent_id
)
SELECT e.name AS experiment, c.name AS condition, c.template, d.id AS dialogue_id, d.replicate,
       n.id AS node_id, n.parent_id, n.turn_index, n.speaker, n.model,
       (n.model IS 'researcher-edit') AS edited,
       (h.node_id IS NOT NULL) AS on_head,
       n.content, n.prompt_tokens, n.prompt_tokens_evaluated, n.prompt_tokens_cached, n.completion_tokens,
       n.time_to_first_token_ms, n.latency_ms, n.finish_reason,
       json_extract(n.params, '$.temperature') AS temperature,
       m.chars, m.words, m.distinct_words, m.new_words, m.vocabulary,
       m.overlap_partner, m.overlap_self, m.repetition, m.symbol_rate, m.emoji_rate,
       n.created_at
FROM node n
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN head h ON h.node_id = n.id
LEFT JOIN turn_metrics m ON m.node_id = n.id
WHERE n.kind = 'turn';

CREATE VIEW v_prediction AS
SELECT e.name AS experiment, c.name AS condition, d.id AS dialogue_id, t.turn_index,
       p.variant, p.speaker AS predictor, p.model AS predictor_model, t.speaker AS target_speaker,
       p.id AS prediction_id, t.id AS target_id, p.content AS prediction, t.content AS actual,
       s.scorer, s.version, s.value, sh.value AS shuffled_value
FROM node p
JOIN node t ON t.id = p.target_node_id
JOIN dialogue d ON d.id = p.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN score s ON s.node_id = p.id AND s.scorer NOT LIKE '%~shuffled'
LEFT JOIN score sh ON sh.node_id = p.id AND sh.scorer = s.scorer || '~shuffled' AND sh.version = s.version
WHERE p.kind = 'prediction';

CREATE VIEW v_coordination AS
WITH answer(node_id, answer) AS (
    SELECT s.node_id, json_extract(s.detail, '$.answer') FROM score s
    WHERE s.scorer = 'answer'
      AND s.version = (SELECT max(v.version) FROM score v WHERE v.node_id = s.node_id AND v.scorer = 'answer')
)
SELECT e.name AS experiment, c.name AS condition, d.id AS dialogue_id, d.model_a, d.model_b,
       substr(a.variant, 1, instr(a.variant, '@') - 1) AS task,
       substr(a.variant, instr(a.variant, '@') + 1) AS phase,
       a.content AS raw_a, b.content AS raw_b, aa.answer AS answer_a, ab.answer AS answer_b,
       CASE WHEN aa.answer IS NULL OR ab.answer IS NULL THEN NULL
            WHEN aa.answer != '' AND aa.answer = ab.answer THEN 1 ELSE 0 END AS matched
FROM node a
JOIN node b ON b.dialogue_id = a.dialogue_id AND b.kind = 'coordination' AND b.speaker = 'B' AND b.variant = a.variant
JOIN dialogue d ON d.id = a.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN answer aa ON aa.node_id = a.id
LEFT JOIN answer ab ON ab.node_id = b.id
WHERE a.kind = 'coordination' AND a.speaker = 'A';
"""


#: Step 7: the one definition of "the scorer version in force". Before it, the report took the
#: most recently stored score while ``v_coordination`` took ``max(version)`` compared as text
#: ("10" < "9"). ``v_score`` keeps, for each node and scorer, the row stored last (``created_at``,
#: then ``id``); ``v_prediction`` and ``v_coordination`` read it, and so does every reader.
SCORES_IN_FORCE = """
CREATE VIEW v_score AS
SELECT s.id, s.node_id, s.scorer, s.version, s.value, s.detail, s.created_at
FROM score s
WHERE s.id = (
    SELECT v.id FROM score v WHERE v.node_id = s.node_id AND v.scorer = s.scorer
    ORDER BY v.created_at DESC, v.id DESC LIMIT 1
);

DROP VIEW v_prediction;
CREATE VIEW v_prediction AS
SELECT e.name AS experiment, c.name AS condition, d.id AS dialogue_id, t.turn_index,
       p.variant, p.speaker AS predictor, p.model AS predictor_model, t.speaker AS target_speaker,
       p.id AS prediction_id, t.id AS target_id, p.content AS prediction, t.content AS actual,
       s.scorer, s.version, s.value, sh.value AS shuffled_value
FROM node p
JOIN node t ON t.id = p.target_node_id
JOIN dialogue d ON d.id = p.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN v_score s ON s.node_id = p.id AND s.scorer NOT LIKE '%~shuffled' AND s.scorer != 'answer'
LEFT JOIN score sh ON sh.node_id = p.id AND sh.scorer = s.scorer || '~shuffled' AND sh.version = s.version
WHERE p.kind = 'prediction';

DROP VIEW v_coordination;
CREATE VIEW v_coordination AS
WITH answer(node_id, answer) AS (
    SELECT s.node_id, json_extract(s.detail, '$.answer') FROM v_score s WHERE s.scorer = 'answer'
)
SELECT e.name AS experiment, c.name AS condition, d.id AS dialogue_id, d.model_a, d.model_b,
       substr(a.variant, 1, instr(a.variant, '@') - 1) AS task,
       substr(a.variant, instr(a.variant, '@') + 1) AS phase,
       a.content AS raw_a, b.content AS raw_b, aa.answer AS answer_a, ab.answer AS answer_b,
       CASE WHEN aa.answer IS NULL OR ab.answer IS NULL THEN NULL
            WHEN aa.answer != '' AND aa.answer = ab.answer THEN 1 ELSE 0 END AS matched
FROM node a
JOIN node b ON b.dialogue_id = a.dialogue_id AND b.kind = 'coordination' AND b.speaker = 'B' AND b.variant = a.variant
JOIN dialogue d ON d.id = a.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN answer aa ON aa.node_id = a.id
LEFT JOIN answer ab ON ab.node_id = b.id
WHERE a.kind = 'coordination' AND a.speaker = 'A';
"""


# PostgreSQL's steps, where its SQL differs from SQLite's (the step list pairs them; a step with
# one script runs on both). Same tables, columns, constraints and views; what differs is the
# dialect: TIMESTAMP for DATETIME, an identity column where SQLite has an implicit rowid (``node``
# keeps a column named ``rowid``, so "the order nodes were stored in" reads the same on both),
# ``->>`` for ``json_extract``, ``IS NOT DISTINCT FROM`` for ``IS``, and a GIN expression index
# over a ``tsvector`` for the FTS5 table. Boolean columns of views are 0/1 integers, as on SQLite.

#: Step 1 on PostgreSQL.
PG_CORE_TABLES = """
CREATE TABLE experiment (
    id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    spec VARCHAR,
    spec_hash VARCHAR,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (name)
);
CREATE TABLE prompt_template (
    hash VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
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
    created_at TIMESTAMP NOT NULL,
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
    created_at TIMESTAMP NOT NULL,
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
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
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
    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
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
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(dialogue_id) REFERENCES dialogue (id),
    FOREIGN KEY(parent_id) REFERENCES node (id)
);
CREATE INDEX ix_node_dialogue_id ON node (dialogue_id);
CREATE INDEX ix_node_parent_id ON node (parent_id);
"""

#: Step 2 on PostgreSQL.
PG_SCORES_AND_TARGETS = """
ALTER TABLE node ADD COLUMN target_node_id VARCHAR REFERENCES node (id);
CREATE INDEX ix_node_target_node_id ON node (target_node_id);
CREATE TABLE score (
    id INTEGER GENERATED BY DEFAULT AS IDENTITY,
    node_id VARCHAR NOT NULL,
    scorer VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    value FLOAT,
    detail JSON NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (node_id, scorer, version),
    FOREIGN KEY(node_id) REFERENCES node (id)
);
CREATE INDEX ix_score_node_id ON score (node_id);
"""

#: Step 4 on PostgreSQL: full-text search is a GIN index over the accent-folded words
#: (``unaccent``, a trusted extension, wrapped IMMUTABLE so an index may use it).
PG_TURN_METRICS_AND_SEARCH = """
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
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE FUNCTION clonechat_fold(text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT public.unaccent('public.unaccent'::regdictionary, $1) $$;
CREATE INDEX node_fts ON node USING gin (to_tsvector('simple', clonechat_fold(content)));
"""

#: Step 6 on PostgreSQL.
PG_VIEWS_V1 = """
CREATE VIEW v_dialogue AS
SELECT d.id AS dialogue_id, e.name AS experiment, c.name AS condition, c.template, d.replicate, d.seed,
       d.status, d.stop_reason, d.error, d.first_speaker, d.model_a, d.model_b,
       (d.model_a = d.model_b)::int AS clone_pair,
       COALESCE(h.turn_index, 0) AS turns, d.max_turns,
       (SELECT count(*) FROM node t WHERE t.dialogue_id = d.id AND t.kind = 'turn') AS turn_nodes,
       d.head_node_id, d.created_at, d.updated_at
FROM dialogue d
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN node h ON h.id = d.head_node_id;

CREATE VIEW v_path AS
WITH RECURSIVE leaf(id, dialogue_id, parent_id) AS (
    SELECT n.id, n.dialogue_id, n.parent_id FROM node n
    WHERE n.kind IN ('opening', 'turn')
      AND NOT EXISTS (SELECT 1 FROM node k WHERE k.parent_id = n.id AND k.kind IN ('opening', 'turn'))
),
up(path_id, dialogue_id, node_id, parent_id) AS (
    SELECT id, dialogue_id, id, parent_id FROM leaf
    UNION ALL
    SELECT up.path_id, up.dialogue_id, n.id, n.parent_id FROM up JOIN node n ON n.id = up.parent_id
)
SELECT up.dialogue_id, up.path_id, (d.head_node_id IS NOT DISTINCT FROM up.path_id)::int AS is_head,
       n.turn_index, n.id AS node_id, n.speaker, n.kind, n.model, n.content
FROM up
JOIN node n ON n.id = up.node_id
JOIN dialogue d ON d.id = up.dialogue_id;

CREATE VIEW v_turn AS
WITH RECURSIVE head(node_id, parent_id) AS (
    SELECT n.id, n.parent_id FROM dialogue d JOIN node n ON n.id = d.head_node_id
    UNION ALL
    SELECT n.id, n.parent_id FROM head JOIN node n ON n.id = head.parent_id
)
SELECT e.name AS experiment, c.name AS condition, c.template, d.id AS dialogue_id, d.replicate,
       n.id AS node_id, n.parent_id, n.turn_index, n.speaker, n.model,
       (n.model IS NOT DISTINCT FROM 'researcher-edit')::int AS edited,
       (h.node_id IS NOT NULL)::int AS on_head,
       n.content, n.prompt_tokens, n.prompt_tokens_evaluated, n.prompt_tokens_cached, n.completion_tokens,
       n.time_to_first_token_ms, n.latency_ms, n.finish_reason,
       (n.params ->> 'temperature')::float AS temperature,
       m.chars, m.words, m.distinct_words, m.new_words, m.vocabulary,
       m.overlap_partner, m.overlap_self, m.repetition, m.symbol_rate, m.emoji_rate,
       n.created_at
FROM node n
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN head h ON h.node_id = n.id
LEFT JOIN turn_metrics m ON m.node_id = n.id
WHERE n.kind = 'turn';

CREATE VIEW v_prediction AS
SELECT e.name AS experiment, c.name AS condition, d.id AS dialogue_id, t.turn_index,
       p.variant, p.speaker AS predictor, p.model AS predictor_model, t.speaker AS target_speaker,
       p.id AS prediction_id, t.id AS target_id, p.content AS prediction, t.content AS actual,
       s.scorer, s.version, s.value, sh.value AS shuffled_value
FROM node p
JOIN node t ON t.id = p.target_node_id
JOIN dialogue d ON d.id = p.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN score s ON s.node_id = p.id AND s.scorer NOT LIKE '%~shuffled'
LEFT JOIN score sh ON sh.node_id = p.id AND sh.scorer = s.scorer || '~shuffled' AND sh.version = s.version
WHERE p.kind = 'prediction';

CREATE VIEW v_coordination AS
WITH answer(node_id, answer) AS (
    SELECT s.node_id, (s.detail ->> 'answer') FROM score s
    WHERE s.scorer = 'answer'
      AND s.version = (SELECT max(v.version) FROM score v WHERE v.node_id = s.node_id AND v.scorer = 'answer')
)
SELECT e.name AS experiment, c.name AS condition, d.id AS dialogue_id, d.model_a, d.model_b,
       substr(a.variant, 1, strpos(a.variant, '@') - 1) AS task,
       substr(a.variant, strpos(a.variant, '@') + 1) AS phase,
       a.content AS raw_a, b.content AS raw_b, aa.answer AS answer_a, ab.answer AS answer_b,
       CASE WHEN aa.answer IS NULL OR ab.answer IS NULL THEN NULL
            WHEN aa.answer != '' AND aa.answer = ab.answer THEN 1 ELSE 0 END AS matched
FROM node a
JOIN node b ON b.dialogue_id = a.dialogue_id AND b.kind = 'coordination' AND b.speaker = 'B' AND b.variant = a.variant
JOIN dialogue d ON d.id = a.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN answer aa ON aa.node_id = a.id
LEFT JOIN answer ab ON ab.node_id = b.id
WHERE a.kind = 'coordination' AND a.speaker = 'A';
"""

#: Step 7 on PostgreSQL.
PG_SCORES_IN_FORCE = """
CREATE VIEW v_score AS
SELECT s.id, s.node_id, s.scorer, s.version, s.value, s.detail, s.created_at
FROM score s
WHERE s.id = (
    SELECT v.id FROM score v WHERE v.node_id = s.node_id AND v.scorer = s.scorer
    ORDER BY v.created_at DESC, v.id DESC LIMIT 1
);

DROP VIEW v_prediction;
CREATE VIEW v_prediction AS
SELECT e.name AS experiment, c.name AS condition, d.id AS dialogue_id, t.turn_index,
       p.variant, p.speaker AS predictor, p.model AS predictor_model, t.speaker AS target_speaker,
       p.id AS prediction_id, t.id AS target_id, p.content AS prediction, t.content AS actual,
       s.scorer, s.version, s.value, sh.value AS shuffled_value
FROM node p
JOIN node t ON t.id = p.target_node_id
JOIN dialogue d ON d.id = p.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN v_score s ON s.node_id = p.id AND s.scorer NOT LIKE '%~shuffled' AND s.scorer != 'answer'
LEFT JOIN score sh ON sh.node_id = p.id AND sh.scorer = s.scorer || '~shuffled' AND sh.version = s.version
WHERE p.kind = 'prediction';

DROP VIEW v_coordination;
CREATE VIEW v_coordination AS
WITH answer(node_id, answer) AS (
    SELECT s.node_id, (s.detail ->> 'answer') FROM v_score s WHERE s.scorer = 'answer'
)
SELECT e.name AS experiment, c.name AS condition, d.id AS dialogue_id, d.model_a, d.model_b,
       substr(a.variant, 1, strpos(a.variant, '@') - 1) AS task,
       substr(a.variant, strpos(a.variant, '@') + 1) AS phase,
       a.content AS raw_a, b.content AS raw_b, aa.answer AS answer_a, ab.answer AS answer_b,
       CASE WHEN aa.answer IS NULL OR ab.answer IS NULL THEN NULL
            WHEN aa.answer != '' AND aa.answer = ab.answer THEN 1 ELSE 0 END AS matched
FROM node a
JOIN node b ON b.dialogue_id = a.dialogue_id AND b.kind = 'coordination' AND b.speaker = 'B' AND b.variant = a.variant
JOIN dialogue d ON d.id = a.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN answer aa ON aa.node_id = a.id
LEFT JOIN answer ab ON ab.node_id = b.id
WHERE a.kind = 'coordination' AND a.speaker = 'A';
"""


#: Step 8: batch workers on many hosts: the workers, the lease on each dialogue (with its
#: fencing token), and the history of grants. The same on both backends but for the type of
#: the timestamps.
WORKERS_AND_LEASES = """
CREATE TABLE worker (
    id VARCHAR NOT NULL,
    experiment_id VARCHAR NOT NULL,
    host VARCHAR NOT NULL,
    pid INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    lease_seconds FLOAT NOT NULL,
    started_at DATETIME NOT NULL,
    heartbeat_at DATETIME NOT NULL,
    stopped_at DATETIME,
    PRIMARY KEY (id),
    FOREIGN KEY(experiment_id) REFERENCES experiment (id)
);
CREATE INDEX ix_worker_experiment_id ON worker (experiment_id);
CREATE TABLE lease (
    dialogue_id VARCHAR NOT NULL,
    worker_id VARCHAR NOT NULL,
    epoch INTEGER NOT NULL,
    expires_at DATETIME NOT NULL,
    renewed_at DATETIME NOT NULL,
    PRIMARY KEY (dialogue_id),
    FOREIGN KEY(dialogue_id) REFERENCES dialogue (id),
    FOREIGN KEY(worker_id) REFERENCES worker (id)
);
CREATE INDEX ix_lease_worker_id ON lease (worker_id);
CREATE TABLE lease_grant (
    dialogue_id VARCHAR NOT NULL,
    epoch INTEGER NOT NULL,
    worker_id VARCHAR NOT NULL,
    granted_at DATETIME NOT NULL,
    replaced_expires_at DATETIME,
    head_at_grant VARCHAR,
    released_at DATETIME,
    "release" VARCHAR,
    PRIMARY KEY (dialogue_id, epoch),
    FOREIGN KEY(dialogue_id) REFERENCES dialogue (id),
    FOREIGN KEY(worker_id) REFERENCES worker (id)
);
CREATE INDEX ix_lease_grant_worker_id ON lease_grant (worker_id);
"""

#: Step 8 on PostgreSQL.
PG_WORKERS_AND_LEASES = WORKERS_AND_LEASES.replace("DATETIME", "TIMESTAMP")


class _PsycopgPlaceholders:
    """A connection whose ``exec_driver_sql`` takes sqlite3's ``?`` placeholders and hands
    psycopg its ``%s`` ones: step 5's one bulk insert, unchanged, on PostgreSQL."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def execute(self, *args: object, **kwargs: object) -> object:
        return self._conn.execute(*args, **kwargs)  # type: ignore[call-overload]

    def exec_driver_sql(self, sql: str, parameters: object = None) -> object:
        return self._conn.exec_driver_sql(sql.replace("?", "%s"), parameters)  # type: ignore[arg-type]


def pg_backfill_turn_metrics_v1(conn: Connection) -> int:
    """Step 5 on PostgreSQL: the same backfill (version 1 metrics), its insert in psycopg's
    placeholders; a database made at version 4 or earlier that holds turns gets them here."""
    return backfill_turn_metrics_v1(_PsycopgPlaceholders(conn))  # type: ignore[arg-type]


#: Step 9: frontier models. Each node keeps the model's private reasoning apart from its
#: message, the reasoning tokens, the prompt tokens written to a prompt cache, and what the call
#: cost; the reasoning gets a full-text index of its own (searching messages never finds words
#: that were only thought); ``v_turn`` gains the new columns.
REASONING_AND_COST = """
ALTER TABLE node ADD COLUMN reasoning VARCHAR;
ALTER TABLE node ADD COLUMN reasoning_tokens INTEGER;
ALTER TABLE node ADD COLUMN prompt_tokens_cache_written INTEGER;
ALTER TABLE node ADD COLUMN cost_usd FLOAT;
CREATE VIRTUAL TABLE node_fts_reasoning USING fts5(
    reasoning, content="node", content_rowid="rowid", tokenize="unicode61 remove_diacritics 2"
);
CREATE TRIGGER node_fts_reasoning_delete AFTER DELETE ON node WHEN old.reasoning IS NOT NULL BEGIN
    INSERT INTO node_fts_reasoning (node_fts_reasoning, rowid, reasoning) VALUES ('delete', old.rowid, old.reasoning);
END;
CREATE TRIGGER node_fts_reasoning_update AFTER UPDATE OF reasoning ON node BEGIN
    INSERT INTO node_fts_reasoning (node_fts_reasoning, rowid, reasoning)
        SELECT 'delete', old.rowid, old.reasoning WHERE old.reasoning IS NOT NULL;
    INSERT INTO node_fts_reasoning (rowid, reasoning) SELECT new.rowid, new.reasoning WHERE new.reasoning IS NOT NULL;
END;

DROP VIEW v_turn;
CREATE VIEW v_turn AS
WITH RECURSIVE head(node_id, parent_id) AS (
    SELECT n.id, n.parent_id FROM dialogue d JOIN node n ON n.id = d.head_node_id
    UNION ALL
    SELECT n.id, n.parent_id FROM head JOIN node n ON n.id = head.parent_id
)
SELECT e.name AS experiment, c.name AS condition, c.template, d.id AS dialogue_id, d.replicate,
       n.id AS node_id, n.parent_id, n.turn_index, n.speaker, n.model,
       (n.model IS 'researcher-edit') AS edited,
       (h.node_id IS NOT NULL) AS on_head,
       n.content, n.prompt_tokens, n.prompt_tokens_evaluated, n.prompt_tokens_cached, n.completion_tokens,
       n.time_to_first_token_ms, n.latency_ms, n.finish_reason,
       json_extract(n.params, '$.temperature') AS temperature,
       m.chars, m.words, m.distinct_words, m.new_words, m.vocabulary,
       m.overlap_partner, m.overlap_self, m.repetition, m.symbol_rate, m.emoji_rate,
       n.created_at,
       n.reasoning, n.reasoning_tokens, n.prompt_tokens_cache_written, n.cost_usd
FROM node n
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN head h ON h.node_id = n.id
LEFT JOIN turn_metrics m ON m.node_id = n.id
WHERE n.kind = 'turn';
"""

#: Step 9 on PostgreSQL: the reasoning's index is a GIN expression index, like the messages'.
PG_REASONING_AND_COST = """
ALTER TABLE node ADD COLUMN reasoning VARCHAR;
ALTER TABLE node ADD COLUMN reasoning_tokens INTEGER;
ALTER TABLE node ADD COLUMN prompt_tokens_cache_written INTEGER;
ALTER TABLE node ADD COLUMN cost_usd FLOAT;
CREATE INDEX node_fts_reasoning ON node USING gin (to_tsvector('simple', clonechat_fold(reasoning)));

DROP VIEW v_turn;
CREATE VIEW v_turn AS
WITH RECURSIVE head(node_id, parent_id) AS (
    SELECT n.id, n.parent_id FROM dialogue d JOIN node n ON n.id = d.head_node_id
    UNION ALL
    SELECT n.id, n.parent_id FROM head JOIN node n ON n.id = head.parent_id
)
SELECT e.name AS experiment, c.name AS condition, c.template, d.id AS dialogue_id, d.replicate,
       n.id AS node_id, n.parent_id, n.turn_index, n.speaker, n.model,
       (n.model IS NOT DISTINCT FROM 'researcher-edit')::int AS edited,
       (h.node_id IS NOT NULL)::int AS on_head,
       n.content, n.prompt_tokens, n.prompt_tokens_evaluated, n.prompt_tokens_cached, n.completion_tokens,
       n.time_to_first_token_ms, n.latency_ms, n.finish_reason,
       (n.params ->> 'temperature')::float AS temperature,
       m.chars, m.words, m.distinct_words, m.new_words, m.vocabulary,
       m.overlap_partner, m.overlap_self, m.repetition, m.symbol_rate, m.emoji_rate,
       n.created_at,
       n.reasoning, n.reasoning_tokens, n.prompt_tokens_cache_written, n.cost_usd
FROM node n
JOIN dialogue d ON d.id = n.dialogue_id
JOIN condition c ON c.id = d.condition_id
JOIN experiment e ON e.id = c.experiment_id
LEFT JOIN head h ON h.node_id = n.id
LEFT JOIN turn_metrics m ON m.node_id = n.id
WHERE n.kind = 'turn';
"""
