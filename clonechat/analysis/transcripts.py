"""Every dialogue of an experiment as JSON-ready data: what the HTML report embeds so a reader
can open any transcript (its whole tree, the side channels beside it, their scores) without the
database.

The report embeds this for every dialogue, so at 1,000 dialogues its size is the report's size:
keys are short, empty values are left out, a node names its model only when it is not its
speaker's, and scores are rounded to 4 decimals (the report shows 3; whole numbers as
integers). Private reasoning (``node.reasoning``) is never read, so it cannot reach a page.

A dialogue::

    {"id": ULID, "cond": condition, "rep": replicate, "status": ..., "stop": stop_reason,
     "ma": model_a, "mb": model_b, "seed": seed, "first": first_speaker ("A"/"B"),
     "turns": turns of the current conversation (the head's turn index, as every screen counts),
     "path": [node ids from the opening to the head: the current conversation],
     "nodes": [node, ...]}                # every node of the tree, oldest first

A node::

    {"id": ULID, "p": parent_id, "s": speaker (A/B/researcher), "k": kind (opening, turn, error,
     prediction, coordination, report), "t": turn_index, "c": content,
     "m": model (only when it is not the speaker's, "ma"/"mb": a cross-model predictor, an edit),
     "v": variant (prediction: partner/self/cross; coordination: TASK@before|after),
     "tg": target_node_id (a prediction's turn), "err": error (an error node),
     "e": {override: value} (a researcher's edit: what its branch runs with, prompt hashes cut
          to 12 characters),
     "sc": {scorer: [value, shuffled]} (a prediction's scores in force and its shuffled
          control's, ``NAME`` and ``NAME~shuffled``; either may be null),
     "a": the normalised answer (a coordination answer its task's rule has read)}

Keys whose value is null (or empty) are left out.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from clonechat.errors import NotFoundError
from clonechat.read.connect import Readable, snapshot
from clonechat.read.experiments import require_experiment
from clonechat.read.paths import path_in
from clonechat.read.transcripts import (
    NodeScore,
    TranscriptDialogue,
    TranscriptNode,
    transcript_dialogues,
    transcript_nodes,
    transcript_scores,
)
from clonechat.scoring.coordination import ANSWER_SCORER
from clonechat.scoring.runner import SHUFFLED_SUFFIX

#: Decimals a score keeps in the page (the report shows 3).
SCORE_DECIMALS = 4
#: Characters of a prompt hash an edit's overrides show (as the provenance shows hashes).
HASH_CHARS = 12
CONVERSATION_KINDS = frozenset({"opening", "turn"})


def _compact(record: dict[str, Any]) -> dict[str, object]:
    """``record`` without its null or empty values: most nodes have no variant, target, error,
    edit or scores, and 1,000 dialogues of ``"v":null`` add up."""
    return {k: v for k, v in record.items() if v is not None and v != {} and v != []}


def _number(value: float | None) -> float | int | None:
    """A score as the page keeps it: 4 decimals, and a whole number without its ``.0`` (most
    scorers are binary: 1 and 0, not 1.0 and 0.0)."""
    if value is None:
        return None
    rounded = round(value, SCORE_DECIMALS)
    return int(rounded) if rounded.is_integer() else rounded


def _score_pairs(scores: list[NodeScore]) -> tuple[dict[str, list[float | int | None]], str | None]:
    """A node's scores as ``{scorer: [value, shuffled]}`` and its normalised answer."""
    pairs: dict[str, list[float | int | None]] = {}
    answer = None
    for score in scores:
        if score.scorer == ANSWER_SCORER:
            answer = score.answer
            continue
        value = _number(score.value)
        name, shuffled = score.scorer, score.scorer.endswith(SHUFFLED_SUFFIX)
        if shuffled:
            name = name.removesuffix(SHUFFLED_SUFFIX)
        pair = pairs.setdefault(name, [None, None])
        pair[1 if shuffled else 0] = value
    return dict(sorted(pairs.items())), answer


def _edit(params: dict[str, Any]) -> dict[str, Any]:
    """An edit's overrides, prompt hashes cut short (the text is in the database, not the page)."""
    return {k: v[:HASH_CHARS] if k.startswith("system_prompt") and isinstance(v, str) else v for k, v in params.items()}


def _node(node: TranscriptNode, scores: list[NodeScore], models: dict[str, str]) -> dict[str, object]:
    pairs, answer = _score_pairs(scores)
    # Most nodes were written by their speaker's model: only another one (a cross-model
    # predictor, a researcher's edit) is named on the node.
    model = None if node.model == models.get(node.speaker) else node.model
    return _compact(
        {
            "id": node.id,
            "p": node.parent_id,
            "s": node.speaker,
            "k": node.kind,
            "t": node.turn_index,
            "c": node.content,
            "m": model,
            "v": node.variant,
            "tg": node.target_node_id,
            "err": node.error,
            "e": _edit(node.edit_params),
            "sc": pairs,
            "a": answer,
        }
    )


def _path(dialogue: TranscriptDialogue, nodes: list[TranscriptNode]) -> list[str]:
    """The current conversation's node ids, root first (empty before the opening is stored)."""
    if dialogue.head_node_id is None:
        return []
    try:
        return path_in({n.id: n.parent_id for n in nodes}, dialogue.head_node_id)
    except NotFoundError:  # a head outside the nodes read: nothing sensible to show as current
        return []


def _turns(path: list[str], nodes: list[TranscriptNode]) -> int:
    """The head's turn index (of the last conversation node on the path), the one "turns"."""
    kinds = {n.id: (n.kind, n.turn_index) for n in nodes}
    for node_id in reversed(path):
        kind, turn_index = kinds[node_id]
        if kind in CONVERSATION_KINDS:
            return turn_index
    return 0


def _dialogue(
    dialogue: TranscriptDialogue, nodes: list[TranscriptNode], scores: dict[str, list[NodeScore]]
) -> dict[str, object]:
    path = _path(dialogue, nodes)
    models = {"A": dialogue.model_a, "B": dialogue.model_b}
    return _compact(
        {
            "id": dialogue.id,
            "cond": dialogue.condition,
            "rep": dialogue.replicate,
            "status": dialogue.status,
            "stop": dialogue.stop_reason,
            "ma": dialogue.model_a,
            "mb": dialogue.model_b,
            "seed": dialogue.seed,
            "first": dialogue.first_speaker,
            "turns": _turns(path, nodes),
            "path": path,
            "nodes": [_node(n, scores.get(n.id, []), models) for n in nodes],
        }
    )


def load_transcripts(db: Readable, experiment: str) -> list[dict[str, object]]:
    """Every dialogue of the experiment called ``experiment`` (a NotFoundError naming the known
    ones if none), by condition in planned order, then replicate, as the JSON-ready records
    the module docstring describes. Read at one moment, so a batch writing meanwhile cannot make
    a score point at a node that was not read."""
    with snapshot(db) as moment:
        found = require_experiment(moment, experiment)
        dialogues = transcript_dialogues(moment, found.id)
        nodes = transcript_nodes(moment, found.id)
        scores = transcript_scores(moment, found.id, ANSWER_SCORER)
    by_dialogue: dict[str, list[TranscriptNode]] = defaultdict(list)
    for node in nodes:
        by_dialogue[node.dialogue_id].append(node)
    by_node: dict[str, list[NodeScore]] = defaultdict(list)
    for score in scores:
        by_node[score.node_id].append(score)
    return [_dialogue(d, by_dialogue.get(d.id, []), by_node) for d in dialogues]
