"""SQL views for the questions researchers ask of a run database.

They are plain SQLite (no Python functions), so ``sqlite3``, Datasette, pandas and
``clonechat query`` all see the same thing, and the read layer (``clonechat.read``) reads them
too. Their SQL is part of the shipped migration steps (``clonechat.store.migration_steps``): a
changed view is a new step that drops and recreates it. ``VIEW_DOCS`` says what each view is
for; ``docs/schema.md`` is generated from it and from the models.
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
    "v_score": (
        "The scores in force: for each scored node and scorer, the row stored last (by `created_at`, "
        "then `id`). Re-scoring with a changed scorer adds rows to `score`; this view is the one "
        "definition of which version counts, and the report, the TUI and the other views use it. "
        "Scoring never stores a version twice, so re-running a scorer whose version is already "
        "stored does not bring it back into force: rescore with a new version instead."
    ),
    "v_prediction": (
        "One row per prediction and scorer, at the scorer version in force (`v_score`): who "
        "predicted (`variant` partner/self/cross, `predictor`, `predictor_model`), the turn "
        "predicted, both texts, the score against the actual message (`value`) and against the "
        "shuffled control of the same version (`shuffled_value`). Unscored predictions appear once "
        "with `scorer` NULL."
    ),
    "v_coordination": (
        "One row per dialogue and coordination question (`task`, `phase` before/after): both agents' "
        "raw answers, the answers as the task reads them (the `answer` scores in force, filled in "
        "by scoring: `clonechat score`, or the end of a batch), and `matched` (1, 0, or NULL "
        "before scoring)."
    ),
}
