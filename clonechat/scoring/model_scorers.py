"""Scorers that need a model: surprisal and an LLM judge.

**Surprisal** is the predictor model's log-probability of the actual message given the exact
context the prediction was made from (its own view plus the prediction instruction): not "did
it guess the words" but "how expected was what the clone really said, to this predictor". It
needs prompt log-probabilities, which clonechat computes in-process for the embedded model
(see docs/surprisal.md for which servers could provide them); other predictors are reported as
unavailable rather than scored wrongly. The value stored is the mean log-probability per token
(nats; higher is less surprising).

**Judge** asks a model to rate, with the rubric in ``prompts/judges/``, how closely the
prediction matches the message, 0-10 (stored as 0-1). The version names the judge model and
the rubric's hash, so a different judge or rubric is a different score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select

from clonechat.engine.protocol import with_instruction
from clonechat.engine.records import AgentName, NodeRecord
from clonechat.engine.views import agent_view
from clonechat.prompts import PromptTemplate
from clonechat.providers.base import ChatMessage, ChatRequest, GenerationParams, Provider
from clonechat.providers.logprobs import LogprobSource
from clonechat.scoring.registry import parse_rating
from clonechat.scoring.runner import ModelScore
from clonechat.scoring.targets import PredictionTarget
from clonechat.scoring.text import ScoreResult
from clonechat.store import reads
from clonechat.store.database import Database
from clonechat.store.models import Node, Prompt

SURPRISAL_NAME, SURPRISAL_VERSION = "surprisal", "1"
JUDGE_NAME = "judge"


@dataclass(frozen=True)
class _DialogueContext:
    first_speaker: AgentName
    system: dict[str, str]
    settings: dict[str, Any]


class PredictorContexts:
    """Rebuilds the messages a prediction was made from, from the store."""

    def __init__(self, db: Database, experiment_id: str) -> None:
        query = text(
            "SELECT d.id, d.first_speaker, pa.text, pb.text, d.settings FROM dialogue d "
            "JOIN condition c ON c.id = d.condition_id JOIN prompt pa ON pa.hash = d.system_prompt_a "
            "JOIN prompt pb ON pb.hash = d.system_prompt_b WHERE c.experiment_id = :experiment"
        )
        with db.session() as session:
            rows = session.connection().execute(query, {"experiment": experiment_id}).all()
            self._dialogues = {
                r[0]: _DialogueContext(
                    "A" if r[1] == "A" else "B",
                    {"A": r[2], "B": r[3]},
                    json.loads(r[4]) if isinstance(r[4], str) else dict(r[4]),
                )
                for r in rows
            }
            nodes = session.exec(
                select(Node).where(
                    col(Node.dialogue_id).in_(list(self._dialogues)), col(Node.kind).in_(["opening", "turn"])
                )
            ).all()
            self._nodes = {n.id: reads.node_record(n) for n in nodes}
            hashes = {
                h
                for d in self._dialogues.values()
                for h in (d.settings.get("measures", {}).get("prediction") or {}).values()
                if isinstance(h, str) and len(h) == 64
            }
            prompts = session.exec(select(Prompt).where(col(Prompt.hash).in_(hashes))).all()
            self._prompts = {p.hash: p.text for p in prompts}

    def _path(self, leaf_id: str) -> list[NodeRecord]:
        path: list[NodeRecord] = []
        current: str | None = leaf_id
        while current is not None:
            node = self._nodes[current]
            path.append(node)
            current = node.parent_id
        return path[::-1]

    def messages(self, target: PredictionTarget) -> list[ChatMessage]:
        dialogue = self._dialogues[target.dialogue_id]
        agent: AgentName = "A" if target.predictor == "A" else "B"
        prediction = dialogue.settings.get("measures", {}).get("prediction") or {}
        instruction = self._prompts[prediction["self" if target.variant == "self" else "partner"]]
        view = agent_view(agent, dialogue.system[agent], self._path(target.parent_id), dialogue.first_speaker)
        return with_instruction(view, instruction)


def surprisal_scorer(contexts: PredictorContexts, provider_for: dict[str, Provider | None]) -> ModelScore:
    """``provider_for`` maps the predictor's model name to its provider (``None``: not loaded)."""

    async def score(target: PredictionTarget, message: str) -> ScoreResult | None:
        provider = provider_for.get(target.model)
        if provider is None or not hasattr(provider, "continuation_logprob"):
            return None
        source: LogprobSource = provider  # type: ignore[assignment]
        result = await source.continuation_logprob(contexts.messages(target), message)
        return ScoreResult(
            result.mean,
            {"total": result.total, "tokens": result.tokens, "bits_per_token": result.surprisal_bits_per_token},
        )

    return score


def judge_version(provider: Provider, rubric: PromptTemplate) -> str:
    return f"{provider.model_name}/{rubric.hash[:10]}"


def judge_scorer(provider: Provider, rubric: PromptTemplate) -> ModelScore:
    async def score(target: PredictionTarget, message: str) -> ScoreResult | None:
        prompt = rubric.render({"actual": message, "predicted": target.predicted})
        request = ChatRequest(
            [ChatMessage("user", prompt.text)],
            GenerationParams(temperature=0.0, max_tokens=8, seed=0),
            cache_key="judge",
        )

        async def ignore(_text: str) -> None:
            return None

        completion = await provider.generate(request, ignore)
        rating = parse_rating(completion.text, 0, 10)
        return ScoreResult(None if rating is None else rating / 10, {"raw": completion.text[:200], "scale": "0-10"})

    return score
