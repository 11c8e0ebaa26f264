"""Privileged self-knowledge by surprisal (after Song, Hu and Mahowald 2025): how much of
"predicting my clone" is shared weights, and how much shared context?

For each turn, the log-probability of the message actually written, under

- (a) ``own``: the speaker's model given the speaker's own context (its view just before it
  wrote the message: the distribution it was sampled from);
- (b) ``partner_view``: the speaker's model given the partner's view just before the message,
  with the prediction instruction that makes the message the partner's next reply (in a clone
  condition, the clone itself);
- (c) ``other_model``: a different model given that same partner view: ``self_knowledge
  .cross_model`` unless that is the speaker's own model, else the partner's model if it is
  another one (a cross-model condition); without one, (c) is left out.

(a) − (b) is what the speaker's own context adds with the weights held fixed; (b) − (c) is what
the same weights add with the context held fixed. Each is a score row on the turn (value: the
message's total log-probability in nats, comparable across tokenisers because the text is the
same; ``detail`` has the tokens and the mean per token). Scored wherever surprisal is (the
embedded model in-process, servers returning prompt log-probabilities); a model that cannot
score given text is reported as unavailable, never approximated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import anyio

from clonechat.engine.protocol import with_instruction
from clonechat.engine.records import AgentName, NodeRecord, other
from clonechat.engine.views import agent_view
from clonechat.errors import ProviderError
from clonechat.providers.base import ChatMessage, Provider
from clonechat.providers.logprobs import LogprobSource
from clonechat.read.connect import Readable
from clonechat.read.dialogues import prompt_texts
from clonechat.read.measures import scored_turns
from clonechat.read.paths import node_record, path_in
from clonechat.read.scores import conversation_nodes, dialogue_setups
from clonechat.store import writes
from clonechat.store.database import Database

OWN, PARTNER_VIEW, OTHER_MODEL = "logprob_own", "logprob_partner_view", "logprob_other_model"
SELF_KNOWLEDGE_SCORERS = (OWN, PARTNER_VIEW, OTHER_MODEL)
SELF_KNOWLEDGE_VERSION = "1"
#: Turns scored at once, so one model's scoring overlaps another's (each provider keeps its own
#: limits: the embedded model scores one at a time, a server up to its max_connections).
TURNS_IN_FLIGHT = 4


@dataclass
class SelfKnowledgeSummary:
    turns: int = 0
    new_scores: int = 0
    #: Models asked to score that cannot score given text, with how many turns each.
    unavailable: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Job:
    turn: NodeRecord
    scorer: str
    model: str
    messages: list[ChatMessage]


def _jobs(db: Readable, experiment_id: str) -> list[_Job]:
    """Every (turn, decomposition term) of the dialogues with self-knowledge on."""
    setups = [d for d in dialogue_setups(db, experiment_id) if d.settings.get("measures", {}).get("self_knowledge")]
    if not setups:
        return []
    nodes = {n.id: node_record(n) for n in conversation_nodes(db, [d.dialogue_id for d in setups])}
    parents = {node_id: node.parent_id for node_id, node in nodes.items()}
    instructions = prompt_texts(db, {d.settings["measures"]["self_knowledge"]["instruction"] for d in setups})
    by_dialogue: dict[str, list[NodeRecord]] = {}
    for node in nodes.values():
        if node.kind == "turn" and node.speaker != "researcher":
            by_dialogue.setdefault(node.dialogue_id, []).append(node)
    jobs: list[_Job] = []
    for setup in setups:
        knowledge = setup.settings["measures"]["self_knowledge"]
        instruction = instructions[knowledge["instruction"]]
        first: AgentName = "A" if setup.first_speaker == "A" else "B"
        system = {"A": setup.system_a, "B": setup.system_b}
        models = {"A": setup.model_a, "B": setup.model_b}
        for turn in sorted(by_dialogue.get(setup.dialogue_id, []), key=lambda n: n.id):
            speaker: AgentName = "A" if turn.speaker == "A" else "B"
            partner = other(speaker)
            path = [nodes[i] for i in path_in(parents, turn.parent_id)] if turn.parent_id else []
            own = agent_view(speaker, system[speaker], path, first)
            view = with_instruction(agent_view(partner, system[partner], path, first), instruction)
            jobs.append(_Job(turn, OWN, models[speaker], own))
            jobs.append(_Job(turn, PARTNER_VIEW, models[speaker], view))
            # (c) is a model other than the speaker's: the spec's, else the partner's if it differs.
            candidates = [knowledge.get("cross_model"), models[partner]]
            different = next((str(m) for m in candidates if m and m != models[speaker]), None)
            if different is not None:
                jobs.append(_Job(turn, OTHER_MODEL, different, view))
    return jobs


async def score_self_knowledge(
    db: Database, experiment_id: str, provider_for: Callable[[str], Provider | None]
) -> SelfKnowledgeSummary:
    """Score every turn's missing decomposition terms; ``provider_for`` gives a model's provider
    by registry name (None: not available). Rows are written per turn, so an interrupted run
    keeps what it finished; the first ``ProviderError`` stops the run and is raised."""
    have = scored_turns(db, experiment_id, SELF_KNOWLEDGE_SCORERS)
    summary = SelfKnowledgeSummary()
    pending: dict[str, list[_Job]] = {}
    for job in _jobs(db, experiment_id):
        if (job.turn.id, job.scorer) not in have:
            pending.setdefault(job.turn.id, []).append(job)
    summary.turns = len(pending)
    limiter = anyio.CapacityLimiter(TURNS_IN_FLIGHT)
    failures: list[ProviderError] = []

    async def term(job: _Job, rows: list[writes.NewScore]) -> None:
        provider = provider_for(job.model)
        if provider is None or not hasattr(provider, "continuation_logprob"):
            summary.unavailable[job.model] = summary.unavailable.get(job.model, 0) + 1
            return
        source: LogprobSource = provider  # type: ignore[assignment]
        result = await source.continuation_logprob(job.messages, job.turn.content)
        detail = {"tokens": result.tokens, "mean": result.mean, "model": job.model}
        rows.append(writes.NewScore(job.turn.id, job.scorer, SELF_KNOWLEDGE_VERSION, result.total, detail))

    async def turn(jobs: list[_Job], scope: anyio.CancelScope) -> None:
        async with limiter:
            rows: list[writes.NewScore] = []
            complete = True
            try:
                # The terms of a turn at once: (c)'s model is often another server than (a)'s and (b)'s.
                async with anyio.create_task_group() as group:
                    for job in jobs:
                        group.start_soon(term, job, rows)
            except* ProviderError as failed:
                failures.extend(e for e in failed.exceptions if isinstance(e, ProviderError))
                complete = False
                scope.cancel()  # the first failure ends the run; what is stored stays
            if complete:
                summary.new_scores += db.write(partial(writes.insert_scores, scores=rows))

    async with anyio.create_task_group() as turns:
        for jobs in pending.values():
            turns.start_soon(turn, jobs, turns.cancel_scope)
    if failures:
        raise failures[0]
    return summary
