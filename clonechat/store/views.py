"""SQL views for the questions researchers ask of a run database.

They are plain SQLite (no Python functions), so ``sqlite3``, Datasette, pandas and
``clonechat query`` all see the same thing. The SQL below is a shipped migration step: never
edit it; a changed view is a new step that drops and recreates it. ``VIEW_DOCS`` says what
each view is for; ``docs/schema.md`` is generated from it and from the models.
"""

from __future__ import annotations

#: View name to what one row is and what the view is for.
VIEW_DOCS: dict[str, str] = {
    "v_dialogue": (
        "One row per dialogue with its experiment and condition names, status, and length "
        "(`turns`: the head's turn index; `turn_nodes`: agent turns on every branch)."
    ),
    "v_path": (
        "Every root-to-leaf conversation path of every dialogue, one row per node on it: "
        "`path_id` is the leaf's id, `is_head` marks the dialogue's current conversation, "
        "`turn_index` orders the path. Branches share their common prefix, which appears once per path."
    ),
    "v_turn": (
        "Every agent turn (all branches), flattened with experiment, condition, replicate, speaker, "
        "model, tokens, latency and its `turn_metrics`; `on_head` is 1 for turns of the dialogue's "
        "current conversation, `edited` for a message the researcher wrote on a fork."
    ),
    "v_prediction": (
        "One row per prediction and scorer version: who predicted (`variant` partner/self/cross, "
        "`predictor`, `predictor_model`), the turn predicted, both texts, the score against the actual "
        "message (`value`) and against the shuffled control (`shuffled_value`). Unscored predictions "
        "appear once with `scorer` NULL."
    ),
    "v_coordination": (
        "One row per dialogue and coordination question (`task`, `phase` before/after): both agents' "
        "raw answers, the answers as the task reads them (filled in by scoring: `clonechat score`, or "
        "the end of a batch), and `matched` (1, 0, or NULL before scoring)."
    ),
}

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
