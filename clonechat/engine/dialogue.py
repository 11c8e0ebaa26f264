"""Run one clone dialogue: two agents taking turns until a stop condition.

The engine is pure AnyIO and reports everything through events; it never touches a database
or a screen. It can start from any path through the tree, which is how resuming after a crash
and continuing a branch both work: the path is the state.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import anyio

from clonechat.constants import DEFAULT_STOP_PHRASE as DEFAULT_STOP_PHRASE
from clonechat.engine.convergence import ConvergenceTracker
from clonechat.engine.events import (
    DialogueEnded,
    DialogueStarted,
    EventSink,
    NodeCompleted,
    TokenDelta,
    TurnFailed,
    TurnRetrying,
    TurnStarted,
)
from clonechat.engine.protocol import CROSS, PARTNER, SELF, Interjection, Protocol, side_key, with_instruction
from clonechat.engine.records import (
    AgentName,
    DialogueStatus,
    NodeKind,
    NodeRecord,
    StopReason,
    new_id,
    other,
    turn_seed,
)
from clonechat.engine.views import agent_view
from clonechat.errors import ConfigError, ProviderError
from clonechat.providers.base import ChatMessage, ChatRequest, Completion, GenerationParams, Provider


@dataclass(frozen=True)
class Agent:
    name: AgentName
    provider: Provider
    system_prompt: str
    params: GenerationParams = field(default_factory=GenerationParams)


@dataclass(frozen=True)
class DialogueSettings:
    dialogue_id: str
    max_turns: int
    first_speaker: AgentName = "A"
    stop_phrase: str | None = DEFAULT_STOP_PHRASE
    #: Total completion tokens both agents may generate; ``None`` for no limit.
    token_budget: int | None = None
    seed: int | None = None
    #: Predictions, coordination questions and reports-back around the dialogue.
    protocol: Protocol = field(default_factory=Protocol)
    #: Output-token limits of the side channels whose answers are short, or need room.
    coordination_max_tokens: int = 32
    report_max_tokens: int = 300

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ConfigError(f"max turns must be at least 1 (got {self.max_turns})")
        if self.token_budget is not None and self.token_budget < 1:
            raise ConfigError(f"token budget must be at least 1 (got {self.token_budget})")


@dataclass(frozen=True)
class DialogueOutcome:
    status: DialogueStatus
    reason: StopReason
    path: list[NodeRecord]
    error: str | None = None

    @property
    def turns(self) -> list[NodeRecord]:
        return [node for node in self.path if node.kind == "turn"]


def opening_node(dialogue_id: str, text: str) -> NodeRecord:
    """The root of a dialogue's tree: the researcher's first message."""
    return NodeRecord(
        id=new_id(),
        dialogue_id=dialogue_id,
        parent_id=None,
        speaker="researcher",
        kind="opening",
        turn_index=0,
        content=text,
    )


def _next_speaker(path: Sequence[NodeRecord], first: AgentName) -> AgentName:
    for node in reversed(path):
        if node.kind == "turn" and node.speaker != "researcher":
            return other(node.speaker)
    return first


def is_agent_turn(node: NodeRecord) -> bool:
    return node.kind == "turn" and node.speaker != "researcher"


def recognition_items(
    path: Sequence[NodeRecord], agent: AgentName, items: int, seed: int | None, dialogue_id: str
) -> list[NodeRecord]:
    """The turns shown to ``agent`` in the self-recognition task: equally many of its own and
    of its partner's (``items`` // 2 each, fewer if the dialogue is shorter), drawn and then
    ordered at random with a seed of the dialogue, so a resumed dialogue asks the same ones.
    The dialogue's seed alone, like its turns' (the id only without one): the same spec and seed
    ask the same items in any database."""
    turns = [node for node in path if is_agent_turn(node)]
    rng = random.Random(f"{seed if seed is not None else dialogue_id}:recognition:{agent}")
    own = [t for t in turns if t.speaker == agent]
    partner = [t for t in turns if t.speaker != agent]
    each = min(items // 2, len(own), len(partner))
    chosen = rng.sample(own, each) + rng.sample(partner, each)
    rng.shuffle(chosen)
    return chosen


class _DialogueRun:
    def __init__(
        self,
        settings: DialogueSettings,
        agents: Sequence[Agent],
        path: Sequence[NodeRecord],
        emit: EventSink,
        stop: anyio.Event | None = None,
    ) -> None:
        if not path or path[0].kind != "opening":
            raise ConfigError("a dialogue path must start at its opening node")
        self.settings = settings
        self.agents = {agent.name: agent for agent in agents}
        if set(self.agents) != {"A", "B"}:
            raise ConfigError("a dialogue needs exactly agents A and B")
        self.path = list(path)
        self.emit = emit
        self.stop = stop
        self.tokens_used = sum(node.completion_tokens or 0 for node in self.path if node.kind == "turn")
        rule = settings.protocol.convergence
        self.convergence = None if rule is None else ConvergenceTracker(rule).extend(self.path)

    @property
    def turns_done(self) -> int:
        """Turns on the path, the researcher's included: the next turn's index is one more."""
        return sum(1 for node in self.path if node.kind == "turn")

    @property
    def agent_turns(self) -> int:
        """Messages the agents have written: what ``max_turns`` and interjections count."""
        return sum(1 for node in self.path if is_agent_turn(node))

    async def run(self) -> DialogueOutcome:
        s = self.settings
        await self.emit(DialogueStarted(s.dialogue_id, s.first_speaker, self.turns_done))
        try:
            await self._coordinate("before")
            reason = await self._loop()
            if reason != "stopped":
                await self._coordinate("after")
                await self._report_back()
                await self._recognise()
        except ProviderError as exc:
            return await self._end("failed", "error", str(exc))
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._end("interrupted", "cancelled")
            raise
        return await self._end("interrupted" if reason == "stopped" else "completed", reason)

    async def _end(self, status: DialogueStatus, reason: StopReason, error: str | None = None) -> DialogueOutcome:
        s = self.settings
        await self.emit(DialogueEnded(s.dialogue_id, status, reason, self.turns_done, self.path[-1].id, error))
        return DialogueOutcome(status, reason, self.path, error)

    def _stop_reason(self) -> StopReason | None:
        """Why the dialogue must not take another turn, judged from the path alone, so a
        resumed dialogue stops exactly where an uninterrupted one would have."""
        s = self.settings
        last = self.path[-1]
        if last.kind == "turn":
            if s.stop_phrase and s.stop_phrase in last.content:
                return "stop_phrase"
            if last.finish_reason == "context_full":
                return "context_full"
        if self.convergence is not None and self.convergence.rule.stop and self.convergence.converged:
            return "converged"
        if s.token_budget is not None and self.tokens_used >= s.token_budget:
            return "token_budget"
        if self.agent_turns >= s.max_turns:
            return "max_turns"
        return None

    async def _loop(self) -> StopReason:
        while True:
            reason = self._stop_reason()
            if reason is not None:
                return reason
            if self.stop is not None and self.stop.is_set():
                # A graceful stop: the turn in flight has finished; start no new one.
                return "stopped"
            await self._interject()
            node, predictions = await self._take_turn()
            self.path.append(node)
            self.tokens_used += node.completion_tokens or 0
            if self.convergence is not None:
                self.convergence.add(node)
            await self.emit(NodeCompleted(node, tuple(predictions)))

    async def _interject(self) -> None:
        """Put the researcher's interjections due before the next agent turn on the path (each
        stored before that turn starts), unless a resumed path already has them."""
        due = [i for i in self.settings.protocol.interjections if i.at == self.agent_turns + 1]
        if not due:
            return
        since_last_turn: list[NodeRecord] = []
        for node in reversed(self.path):
            if is_agent_turn(node):
                break
            since_last_turn.append(node)
        for interjection in due:
            if any(_is(node, interjection) for node in since_last_turn):
                continue
            node = NodeRecord(
                id=new_id(),
                dialogue_id=self.settings.dialogue_id,
                parent_id=self.path[-1].id,
                speaker="researcher",
                kind="turn",
                turn_index=self.turns_done + 1,
                content=interjection.text,
                variant=interjection.to,
            )
            self.path.append(node)
            await self.emit(NodeCompleted(node))

    async def _take_turn(self) -> tuple[NodeRecord, list[NodeRecord]]:
        s = self.settings
        speaker = _next_speaker(self.path, s.first_speaker)
        agent = self.agents[speaker]
        turn_index = self.turns_done + 1
        node_id = new_id()
        parent_id = self.path[-1].id
        params = agent.params
        if s.seed is not None:
            params = replace(params, seed=turn_seed(s.seed, turn_index))
        if s.token_budget is not None:
            remaining = max(1, s.token_budget - self.tokens_used)
            params = replace(params, max_tokens=min(params.max_tokens, remaining))
        predictions = await self._predict(speaker, turn_index, node_id)
        messages = agent_view(speaker, agent.system_prompt, self.path, s.first_speaker)
        prediction = s.protocol.prediction
        if prediction is not None and prediction.reveal is not None:
            revealed = next(p for p in predictions if p.variant == PARTNER)
            messages = with_instruction(messages, prediction.reveal(revealed.content))
        request = ChatRequest(
            messages=messages,
            params=params,
            stop=(s.stop_phrase,) if s.stop_phrase else (),
            cache_key=f"{s.dialogue_id}:{speaker}",
        )
        await self.emit(TurnStarted(s.dialogue_id, node_id, parent_id, speaker, turn_index, agent.provider.model_name))

        async def on_delta(text: str) -> None:
            await self.emit(TokenDelta(s.dialogue_id, node_id, speaker, text))

        async def on_retry(attempt: int, reason: str, wait: float) -> None:
            await self.emit(TurnRetrying(s.dialogue_id, node_id, speaker, attempt, reason, wait))

        started = time.perf_counter()
        try:
            completion = await agent.provider.generate(request, on_delta, on_retry)
        except ProviderError as exc:
            await self._record_failure(node_id, parent_id, speaker, turn_index, agent, str(exc), started)
            raise
        node = self._node(completion, node_id, parent_id, speaker, "turn", turn_index, agent.provider, params, started)
        return node, predictions

    def _node(
        self,
        completion: Completion,
        node_id: str,
        parent_id: str,
        speaker: AgentName,
        kind: NodeKind,
        turn_index: int,
        provider: Provider,
        params: GenerationParams,
        started: float,
        *,
        variant: str | None = None,
        target_node_id: str | None = None,
    ) -> NodeRecord:
        content = completion.text
        if completion.stop_sequence:
            # Keep the stop phrase in the transcript: it is what the agent chose to say.
            content += completion.stop_sequence
        return NodeRecord(
            id=node_id,
            dialogue_id=self.settings.dialogue_id,
            parent_id=parent_id,
            speaker=speaker,
            kind=kind,
            turn_index=turn_index,
            content=content,
            model=completion.model or provider.model_name,
            params=params.as_dict(),
            prompt_tokens=completion.prompt_tokens,
            prompt_tokens_evaluated=completion.prompt_tokens_evaluated,
            prompt_tokens_cached=completion.prompt_tokens_cached,
            completion_tokens=completion.completion_tokens,
            time_to_first_token_ms=None
            if completion.time_to_first_token is None
            else completion.time_to_first_token * 1000,
            latency_ms=completion.latency * 1000 if completion.latency else (time.perf_counter() - started) * 1000,
            finish_reason=completion.finish_reason,
            variant=variant,
            target_node_id=target_node_id,
            reasoning=completion.reasoning,
            reasoning_tokens=completion.reasoning_tokens,
            prompt_tokens_cache_written=completion.prompt_tokens_cache_written,
            cost_usd=completion.cost_usd,
        )

    async def _record_failure(
        self,
        node_id: str,
        parent_id: str,
        speaker: AgentName,
        turn_index: int,
        agent: Agent,
        error: str,
        started: float,
        variant: str | None = None,
        provider: Provider | None = None,
    ) -> None:
        s = self.settings
        await self.emit(TurnFailed(s.dialogue_id, node_id, speaker, turn_index, error))
        # An error node hangs off the path as a record of what happened; it is not part of
        # the conversation and never enters a view.
        await self.emit(
            NodeCompleted(
                NodeRecord(
                    id=node_id,
                    dialogue_id=s.dialogue_id,
                    parent_id=parent_id,
                    speaker=speaker,
                    kind="error",
                    turn_index=turn_index,
                    content="",
                    model=(provider or agent.provider).model_name,
                    params=agent.params.as_dict(),
                    latency_ms=(time.perf_counter() - started) * 1000,
                    error=error,
                    variant=variant,
                )
            )
        )

    # -- side channels ------------------------------------------------------------------------

    async def _side_call(
        self,
        *,
        kind: NodeKind,
        variant: str | None,
        agent: Agent,
        speaker: AgentName,
        provider: Provider,
        messages: list[ChatMessage],
        params: GenerationParams,
        parent: NodeRecord,
        cache_key: str,
        stop: tuple[str, ...] = (),
        target_node_id: str | None = None,
    ) -> NodeRecord:
        """One side request; its answer becomes a node off the path that no view includes.
        A failure after retries is recorded as an error node (with the channel as its variant)
        and fails the dialogue like a failed turn: a measurement silently missing from some
        dialogues would bias the statistics."""
        node_id = new_id()
        turn_index = parent.turn_index + 1
        request = ChatRequest(messages=messages, params=params, stop=stop, cache_key=cache_key)

        async def no_deltas(_text: str) -> None:
            return None

        started = time.perf_counter()
        try:
            completion = await provider.generate(request, no_deltas)
        except ProviderError as exc:
            label = f"{kind}:{variant}" if variant else kind
            await self._record_failure(
                node_id, parent.id, speaker, turn_index, agent, f"{label}: {exc}", started, label, provider
            )
            raise
        return self._node(
            completion,
            node_id,
            parent.id,
            speaker,
            kind,
            turn_index,
            provider,
            params,
            started,
            variant=variant,
            target_node_id=target_node_id,
        )

    def _side_params(self, agent: Agent, purpose: str, turn_index: int, max_tokens: int) -> GenerationParams:
        return replace(agent.params, seed=turn_seed(self.settings.seed, turn_index, purpose), max_tokens=max_tokens)

    def _view(self, agent: AgentName) -> list[ChatMessage]:
        return agent_view(agent, self.agents[agent].system_prompt, self.path, self.settings.first_speaker)

    async def _predict(self, speaker: AgentName, turn_index: int, target_id: str) -> list[NodeRecord]:
        """Predictions of the message ``speaker`` is about to write, made before it writes it.
        Emitted with the turn (``NodeCompleted.side``), never on their own."""
        s = self.settings
        protocol = s.protocol.prediction
        if protocol is None:
            return []
        predictor = other(speaker)
        parent = self.path[-1]
        stop = (s.stop_phrase,) if s.stop_phrase else ()
        # A prediction may be as long as the message it predicts.
        length = self.agents[speaker].params.max_tokens
        partner_view = with_instruction(self._view(predictor), protocol.partner_instruction)
        jobs: list[tuple[str, AgentName, Provider, list[ChatMessage], str]] = [
            (PARTNER, predictor, self.agents[predictor].provider, partner_view, f"{s.dialogue_id}:{predictor}")
        ]
        if protocol.self_instruction is not None:
            own = with_instruction(self._view(speaker), protocol.self_instruction)
            jobs.insert(0, (SELF, speaker, self.agents[speaker].provider, own, f"{s.dialogue_id}:{speaker}"))
        if protocol.cross_provider is not None:
            jobs.append((CROSS, predictor, protocol.cross_provider, partner_view, f"{s.dialogue_id}:cross"))
        predictions: list[NodeRecord] = []
        for variant, who, provider, messages, cache_key in jobs:
            agent = self.agents[who]
            predictions.append(
                await self._side_call(
                    kind="prediction",
                    variant=variant,
                    agent=agent,
                    speaker=who,
                    provider=provider,
                    messages=messages,
                    params=self._side_params(agent, f"predict-{variant}", turn_index, length),
                    parent=parent,
                    cache_key=cache_key,
                    stop=stop,
                    target_node_id=target_id,
                )
            )
        return predictions

    async def _coordinate(self, phase: str) -> None:
        """Ask both agents each coordination question, independently. Before the dialogue an
        agent sees only its system prompt and the question; after it, its view of the dialogue."""
        s = self.settings
        protocol = s.protocol
        if phase not in protocol.coordination_phases or (self.stop is not None and self.stop.is_set()):
            return
        parent = self.path[0] if phase == "before" else self.path[-1]
        for question in protocol.coordination:
            variant = f"{question.task}@{phase}"
            for name in ("A", "B"):
                speaker: AgentName = "A" if name == "A" else "B"
                if side_key("coordination", speaker, variant) in protocol.done:
                    continue
                agent = self.agents[speaker]
                if phase == "before":
                    system = [ChatMessage("system", agent.system_prompt)] if agent.system_prompt else []
                    messages = [*system, ChatMessage("user", question.question)]
                else:
                    messages = with_instruction(self._view(speaker), question.question)
                node = await self._side_call(
                    kind="coordination",
                    variant=variant,
                    agent=agent,
                    speaker=speaker,
                    provider=agent.provider,
                    messages=messages,
                    params=self._side_params(agent, f"coord-{variant}-{speaker}", 0, s.coordination_max_tokens),
                    parent=parent,
                    cache_key=f"{s.dialogue_id}:{speaker}",
                )
                await self.emit(NodeCompleted(node))

    async def _report_back(self) -> None:
        """Each agent writes to the researcher about the conversation, once it is over."""
        s = self.settings
        instruction = s.protocol.report_instruction
        if instruction is None:
            return
        for speaker in ("A", "B"):
            name: AgentName = "A" if speaker == "A" else "B"
            if side_key("report", name, None) in s.protocol.done:
                continue
            agent = self.agents[name]
            node = await self._side_call(
                kind="report",
                variant=None,
                agent=agent,
                speaker=name,
                provider=agent.provider,
                messages=with_instruction(self._view(name), instruction),
                params=self._side_params(agent, f"report-{name}", 0, s.report_max_tokens),
                parent=self.path[-1],
                cache_key=f"{s.dialogue_id}:{name}",
            )
            await self.emit(NodeCompleted(node))

    async def _recognise(self) -> None:
        """The self-recognition task: each agent is shown turns of the conversation, one per
        request and without any label, and asked whether it wrote each one. The shown turn is
        the answer's ``target_node_id``, so scoring knows the truth without the model seeing it."""
        s = self.settings
        recognition = s.protocol.recognition
        if recognition is None:
            return
        for name in ("A", "B"):
            speaker: AgentName = "A" if name == "A" else "B"
            agent = self.agents[speaker]
            shown = recognition_items(self.path, speaker, recognition.items, s.seed, s.dialogue_id)
            for position, item in enumerate(shown):
                if side_key("recognition", speaker, item.id) in s.protocol.done:
                    continue
                question = recognition.question(item.content)
                if recognition.context == "dialogue":
                    messages = with_instruction(self._view(speaker), question)
                else:
                    system = [ChatMessage("system", agent.system_prompt)] if agent.system_prompt else []
                    messages = [*system, ChatMessage("user", question)]
                node = await self._side_call(
                    kind="recognition",
                    variant=str(position),
                    agent=agent,
                    speaker=speaker,
                    provider=agent.provider,
                    messages=messages,
                    params=self._side_params(agent, f"recognise-{speaker}-{position}", 0, recognition.max_tokens),
                    parent=self.path[-1],
                    cache_key=f"{s.dialogue_id}:{speaker}",
                    target_node_id=item.id,
                )
                await self.emit(NodeCompleted(node))


def _is(node: NodeRecord, interjection: Interjection) -> bool:
    return (
        node.speaker == "researcher"
        and node.kind == "turn"
        and node.variant == interjection.to
        and node.content == interjection.text
    )


async def run_dialogue(
    settings: DialogueSettings,
    agents: Sequence[Agent],
    path: Sequence[NodeRecord],
    emit: EventSink,
    *,
    stop: anyio.Event | None = None,
) -> DialogueOutcome:
    """Continue the dialogue from the end of ``path`` until a stop condition.

    ``path`` runs from the opening node to the leaf to continue from: just the opening for a
    new dialogue, the stored turns when resuming, any node's ancestry when branching.
    Cancellation emits ``DialogueEnded(status="interrupted")`` and re-raises. Setting ``stop``
    is the gentle alternative: the turn in flight finishes and is stored, no new turn starts,
    and the dialogue ends ``interrupted`` with reason ``stopped``.
    """
    return await _DialogueRun(settings, agents, path, emit, stop).run()
