"""Scorers that need a model: surprisal and an LLM judge.

**Surprisal** is the predictor model's log-probability of the actual message given the exact
context the prediction was made from (its own view plus the prediction instruction): not "did
it guess the words" but "how expected was what the clone really said, to this predictor". It
needs prompt log-probabilities, which clonechat computes in-process for the embedded model and
asks of servers that return them (``prompt_logprobs`` = llama-cpp, vllm or sglang; see
docs/surprisal.md); other predictors are reported as unavailable rather than scored wrongly.
The value stored is the mean log-probability per token (nats; higher is less surprising).

**Judge** asks a model to rate, with the rubric in ``prompts/judges/``, how closely the
prediction matches the message, 0-10 (stored as 0-1). The version names the judge model and
the rubric's hash, so a different judge or rubric is a different score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clonechat.engine.protocol import with_instruction
from clonechat.engine.records import AgentName, NodeRecord
from clonechat.engine.views import agent_view
from clonechat.prompts import PromptTemplate
from clonechat.providers.base import ChatMessage, ChatRequest, GenerationParams, Provider
from clonechat.providers.logprobs import LogprobSource
from clonechat.read.connect import Readable
from clonechat.read.dialogues import prompt_texts
from clonechat.read.paths import node_record, path_in
from clonechat.read.scores import conversation_nodes, dialogue_setups
from clonechat.scoring.registry import parse_rating
from clonechat.scoring.runner import ModelScore
from clonechat.scoring.targets import PredictionTarget
from clonechat.scoring.text import ScoreResult

SURPRISAL_NAME, SURPRISAL_VERSION = "surprisal", "1"
JUDGE_NAME = "judge"


@dataclass(frozen=True)
class _DialogueContext:
    first_speaker: AgentName
    system: dict[str, str]
    settings: dict[str, Any]


class PredictorContexts:
    """Rebuilds the messages a prediction was made from, from the store: read once for the
    experiment (a few queries), so each prediction's path is walked in memory."""

    def __init__(self, db: Readable, experiment_id: str) -> None:
        self._dialogues = {
            d.dialogue_id: _DialogueContext(
                "A" if d.first_speaker == "A" else "B", {"A": d.system_a, "B": d.system_b}, d.settings
            )
            for d in dialogue_setups(db, experiment_id)
        }
        self._nodes = {n.id: node_record(n) for n in conversation_nodes(db, list(self._dialogues))}
        self._parents = {node_id: node.parent_id for node_id, node in self._nodes.items()}
        hashes = {
            h
            for d in self._dialogues.values()
            for h in (d.settings.get("measures", {}).get("prediction") or {}).values()
            if isinstance(h, str) and len(h) == 64
        }
        self._prompts = prompt_texts(db, hashes)

    def _path(self, leaf_id: str) -> list[NodeRecord]:
        return [self._nodes[i] for i in path_in(self._parents, leaf_id)]

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
