"""The predictions of an experiment, each with the message it predicted and a shuffled control.

The shuffled baseline is the chance level of a prediction: the same prediction scored against
a message from *another* dialogue of the same condition, at the same turn where one exists (so
position in the dialogue, which shapes messages a lot, is the same on both sides). The choice
is seeded by the prediction's id, so re-scoring picks the same message.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from clonechat.store.database import Database

_QUERY = """
SELECT p.id, p.dialogue_id, p.variant, p.speaker, p.content, p.parent_id,
       t.id, t.content, t.turn_index, t.speaker,
       d.condition_id, d.stop_phrase, d.model_a, d.model_b, d.settings
FROM node p
JOIN node t ON t.id = p.target_node_id
JOIN dialogue d ON d.id = p.dialogue_id
JOIN condition c ON c.id = d.condition_id
WHERE p.kind = 'prediction' AND c.experiment_id = :experiment
ORDER BY p.id
"""


@dataclass(frozen=True)
class PredictionTarget:
    prediction_id: str
    dialogue_id: str
    condition_id: str
    variant: str
    #: The agent whose view the prediction was made from (A or B).
    predictor: str
    predicted: str
    parent_id: str
    actual_id: str
    actual: str
    turn_index: int
    stop_phrase: str | None
    #: Registry name of the model that made the prediction.
    model: str
    #: A message of another dialogue of the same condition: the shuffled control.
    shuffled_id: str | None = None
    shuffled: str | None = None


def _predictor_model(variant: str, predictor: str, model_a: str, model_b: str, settings: dict[str, Any]) -> str:
    if variant == "cross":
        return str(settings.get("measures", {}).get("prediction", {}).get("cross_model") or "")
    return model_a if predictor == "A" else model_b


def load_targets(db: Database, experiment_id: str) -> list[PredictionTarget]:
    import json

    with db.session() as session:
        rows = session.connection().execute(text(_QUERY), {"experiment": experiment_id}).all()
    targets: list[PredictionTarget] = []
    for row in rows:
        settings = json.loads(row[14]) if isinstance(row[14], str) else dict(row[14] or {})
        targets.append(
            PredictionTarget(
                prediction_id=row[0],
                dialogue_id=row[1],
                variant=row[2] or "partner",
                predictor=row[3],
                predicted=row[4],
                parent_id=row[5],
                actual_id=row[6],
                actual=row[7],
                turn_index=row[8],
                condition_id=row[10],
                stop_phrase=row[11],
                model=_predictor_model(row[2] or "partner", row[3], row[12], row[13], settings),
            )
        )
    return with_shuffled(targets)


def with_shuffled(targets: list[PredictionTarget]) -> list[PredictionTarget]:
    """Each target with a shuffled control drawn from the other dialogues of its condition."""
    messages: dict[str, dict[str, tuple[str, str, int]]] = {}
    for t in targets:
        messages.setdefault(t.condition_id, {})[t.actual_id] = (t.dialogue_id, t.actual, t.turn_index)
    out: list[PredictionTarget] = []
    for t in targets:
        others = [(i, m) for i, m in messages[t.condition_id].items() if m[0] != t.dialogue_id]
        same_turn = [(i, m) for i, m in others if m[2] == t.turn_index]
        pool = sorted(same_turn or others)
        if not pool:
            out.append(t)
            continue
        seed = int.from_bytes(hashlib.blake2b(t.prediction_id.encode(), digest_size=8).digest(), "big")
        chosen_id, (_dialogue, content, _turn) = random.Random(seed).choice(pool)
        out.append(PredictionTarget(**{**t.__dict__, "shuffled_id": chosen_id, "shuffled": content}))
    return out
