"""The predictions of an experiment, each with the message it predicted and a shuffled control.

The shuffled baseline is the chance level of a prediction: the same prediction scored against
a message from *another* dialogue of the same condition, at the same turn where one exists (so
position in the dialogue, which shapes messages a lot, is the same on both sides). The choice
is seeded by the prediction's id, so re-scoring picks the same message.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, fields, replace
from typing import Any

from clonechat.read.connect import Readable
from clonechat.read.scores import PredictionRow, prediction_rows


@dataclass(frozen=True)
class PredictionTarget(PredictionRow):
    """A stored prediction (the read layer's row) with what scoring adds to it."""

    #: Registry name of the model that made the prediction.
    model: str = ""
    #: A message of another dialogue of the same condition: the shuffled control.
    shuffled_id: str | None = None
    shuffled: str | None = None


def _predictor_model(variant: str, predictor: str, model_a: str, model_b: str, settings: dict[str, Any]) -> str:
    if variant == "cross":
        return str(settings.get("measures", {}).get("prediction", {}).get("cross_model") or "")
    return model_a if predictor == "A" else model_b


def load_targets(db: Readable, experiment_id: str) -> list[PredictionTarget]:
    """Every prediction of the experiment with the message it predicted and its shuffled control."""
    targets = [
        PredictionTarget(
            **{f.name: getattr(row, f.name) for f in fields(PredictionRow)},
            model=_predictor_model(row.variant, row.predictor, row.model_a, row.model_b, row.settings),
        )
        for row in prediction_rows(db, experiment_id)
    ]
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
        out.append(replace(t, shuffled_id=chosen_id, shuffled=content))
    return out
