"""Setting a dialogue up in the store and continuing stored ones.

This is the glue the CLI, the TUI and the batch runner share: render the prompts (so template
errors surface before anything is written), record experiment, condition, prompts and the
dialogue row, and hand the engine its settings, agents and starting path.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from sqlalchemy import Connection

from clonechat.branching import overrides_on
from clonechat.constants import ADHOC_EXPERIMENT as ADHOC_EXPERIMENT
from clonechat.engine.dialogue import DEFAULT_STOP_PHRASE, Agent, DialogueSettings, opening_node
from clonechat.engine.records import AgentName, NodeRecord, new_id
from clonechat.errors import ConfigError, TemplateError
from clonechat.measures import MeasureOptions, RenderedMeasures, build_protocol, prompt_hashes, render_measures
from clonechat.prompts import PromptLibrary, RenderedPrompt
from clonechat.providers.base import GenerationParams
from clonechat.read.connect import Readable
from clonechat.read.dialogues import prompt_texts
from clonechat.read.resume import resume_point
from clonechat.registry import ModelSpec, ProviderPool, Registry, check_generation, default_registry
from clonechat.store import writes
from clonechat.store.models import Dialogue
from clonechat.store.writer import StoreWriter


@dataclass(frozen=True)
class DialogueRequest:
    """What a user asks for when starting one dialogue."""

    condition: str = "clone-aware"
    model_a: str = "local"
    model_b: str | None = None
    max_turns: int = 6
    seed: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop_phrase: str = DEFAULT_STOP_PHRASE
    token_budget: int | None = None
    opening: str = "default"
    first_speaker: AgentName | None = None
    experiment: str = ADHOC_EXPERIMENT
    variables: Mapping[str, str | int | float] = field(default_factory=dict)
    #: Further generation parameters (top_p, repeat_penalty, ...) over the model's defaults.
    params: Mapping[str, float | int] = field(default_factory=dict)
    #: The condition's name in the store; by default the template and the models.
    condition_name: str | None = None
    #: Predictions, coordination questions and reports-back around the dialogue.
    measures: MeasureOptions = field(default_factory=MeasureOptions)

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ConfigError(f"--turns must be at least 1 (got {self.max_turns})")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"--max-tokens must be at least 1 (got {self.max_tokens})")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise ConfigError(f"--temperature must be between 0 and 2 (got {self.temperature})")
        if self.token_budget is not None and self.token_budget < 1:
            raise ConfigError(f"--token-budget must be at least 1 (got {self.token_budget})")


@dataclass(frozen=True)
class PreparedDialogue:
    settings: DialogueSettings
    agents: tuple[Agent, Agent]
    path: list[NodeRecord]
    replicate: int

    @property
    def dialogue_id(self) -> str:
        return self.settings.dialogue_id


@dataclass(frozen=True)
class DialogueBlueprint:
    """A validated request with its prompts rendered and models resolved: everything needed
    to store a dialogue, computed before anything is written."""

    request: DialogueRequest
    spec_a: ModelSpec
    spec_b: ModelSpec
    system_a: RenderedPrompt
    system_b: RenderedPrompt
    opening: RenderedPrompt
    params_a: GenerationParams
    params_b: GenerationParams
    measures: RenderedMeasures

    @property
    def condition_name(self) -> str:
        if self.request.condition_name:
            return self.request.condition_name
        a, b = self.spec_a.name, self.spec_b.name
        return f"{self.request.condition}:{a if a == b else f'{a}+{b}'}"


def _params(spec: ModelSpec, request: DialogueRequest) -> GenerationParams:
    params = spec.defaults
    if request.temperature is not None:
        params = replace(params, temperature=request.temperature)
    if request.max_tokens is not None:
        params = replace(params, max_tokens=request.max_tokens)
    if request.params:
        try:
            params = replace(params, **request.params)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"unknown generation parameter: {exc}") from None
    return params


def _values(request: DialogueRequest, own: ModelSpec, partner: ModelSpec) -> dict[str, object]:
    return {
        "model_name": own.display_name,
        "partner_model_name": partner.display_name,
        "stop_phrase": request.stop_phrase,
        "max_turns": request.max_turns,
        **request.variables,
    }


def _render_prompts(
    request: DialogueRequest, spec_a: ModelSpec, spec_b: ModelSpec, library: PromptLibrary
) -> tuple[RenderedPrompt, RenderedPrompt, RenderedPrompt]:
    condition = library.get("conditions", request.condition)
    opening = library.get("openings", request.opening)
    declared = set(condition.variables) | set(opening.variables)
    for name in request.variables:
        if name not in declared:
            raise TemplateError(
                f"unknown prompt variable '{name}': neither {condition.label} nor {opening.label} declares it "
                f"(they declare: {', '.join(sorted(declared)) or 'nothing'})"
            )

    return (
        condition.render(_values(request, spec_a, spec_b)),
        condition.render(_values(request, spec_b, spec_a)),
        opening.render(_values(request, spec_a, spec_b)),
    )


def blueprint(
    request: DialogueRequest, library: PromptLibrary | None = None, registry: Registry | None = None
) -> DialogueBlueprint:
    """Resolve models and render prompts; raises a clear error for any bad setting."""
    library = library or PromptLibrary()
    registry = registry or default_registry()
    spec_a = registry.get(request.model_a)
    spec_b = registry.get(request.model_b or request.model_a)
    system_a, system_b, opening = _render_prompts(request, spec_a, spec_b, library)
    measures = render_measures(
        request.measures, _values(request, spec_a, spec_b), library, registry, _values(request, spec_b, spec_a)
    )
    params_a, params_b = _params(spec_a, request), _params(spec_b, request)
    check_generation(spec_a, params_a)
    check_generation(spec_b, params_b)
    return DialogueBlueprint(request, spec_a, spec_b, system_a, system_b, opening, params_a, params_b, measures)


@dataclass(frozen=True)
class StoredDialogue:
    dialogue_id: str
    replicate: int
    first_speaker: AgentName
    seed: int
    root: NodeRecord


@dataclass(frozen=True)
class StoredCondition:
    condition_id: str
    system_prompt_a: str
    system_prompt_b: str
    opening_prompt: str


def store_condition(conn: Connection, plan: DialogueBlueprint, experiment_id: str) -> StoredCondition:
    """The condition row and the rendered prompts its dialogues share (idempotent)."""
    request = plan.request
    condition_id = writes.ensure_condition(
        conn,
        experiment_id,
        plan.condition_name,
        request.condition,
        plan.spec_a.name,
        plan.spec_b.name,
        {
            "opening": request.opening,
            "variables": dict(request.variables),
            "max_turns": request.max_turns,
            "params_a": plan.params_a.as_dict(),
            "params_b": plan.params_b.as_dict(),
            "measures": plan.measures.settings(),
        },
    )
    a, b, opening = (writes.store_prompt(conn, prompt) for prompt in (plan.system_a, plan.system_b, plan.opening))
    for prompt in plan.measures.prompts.values():
        writes.store_prompt(conn, prompt)
    return StoredCondition(condition_id, a, b, opening)


def store_dialogue(
    conn: Connection,
    plan: DialogueBlueprint,
    experiment_id: str,
    *,
    replicate: int | None = None,
    seed: int | None = None,
    first_speaker: AgentName | None = None,
    condition: StoredCondition | None = None,
) -> StoredDialogue:
    """Write one dialogue (its condition and prompts unless given, its row and opening node) in
    the caller's transaction. ``replicate`` defaults to the condition's next one."""
    request = plan.request
    condition = condition or store_condition(conn, plan, experiment_id)
    if replicate is None:
        replicate = writes.next_replicate(conn, condition.condition_id)
    if seed is None:
        seed = request.seed if request.seed is not None else random.randrange(2**31)
    # Who speaks first alternates across replicates, so position effects average out.
    first: AgentName = first_speaker or request.first_speaker or ("A" if replicate % 2 == 1 else "B")
    dialogue_id = new_id()
    root = opening_node(dialogue_id, plan.opening.text)
    writes.create_dialogue(
        conn,
        writes.NewDialogue(
            id=dialogue_id,
            condition_id=condition.condition_id,
            replicate=replicate,
            seed=seed,
            first_speaker=first,
            max_turns=request.max_turns,
            token_budget=request.token_budget,
            stop_phrase=request.stop_phrase,
            model_a=plan.spec_a.name,
            model_b=plan.spec_b.name,
            system_prompt_a=condition.system_prompt_a,
            system_prompt_b=condition.system_prompt_b,
            opening_prompt=condition.opening_prompt,
            settings={
                "params_a": plan.params_a.as_dict(),
                "params_b": plan.params_b.as_dict(),
                "measures": plan.measures.settings(),
            },
            head_node_id=root.id,
        ),
    )
    writes.insert_nodes(conn, [root])
    return StoredDialogue(dialogue_id, replicate, first, seed, root)


async def prepare_dialogue(
    writer: StoreWriter,
    request: DialogueRequest,
    pool: ProviderPool,
    library: PromptLibrary | None = None,
) -> PreparedDialogue:
    """Validate ``request``, store a new dialogue with its opening, and return what the engine
    needs to run it. Nothing is written if the request is invalid."""
    plan = blueprint(request, library)
    provider_a, provider_b = pool.get(plan.spec_a), pool.get(plan.spec_b)

    def create(conn: Connection) -> StoredDialogue:
        return store_dialogue(conn, plan, writes.ensure_experiment(conn, request.experiment))

    stored = await writer.call(create)
    cross = plan.measures.cross_model
    protocol, coordination_tokens, report_tokens = build_protocol(
        plan.measures.settings(),
        {p.hash: p.text for p in plan.measures.prompts.values()},
        lambda _name: pool.get(cross) if cross is not None else pool.get(plan.spec_b),
    )
    settings = DialogueSettings(
        dialogue_id=stored.dialogue_id,
        max_turns=request.max_turns,
        first_speaker=stored.first_speaker,
        stop_phrase=request.stop_phrase or None,
        token_budget=request.token_budget,
        seed=stored.seed,
        protocol=protocol,
        coordination_max_tokens=coordination_tokens,
        report_max_tokens=report_tokens,
    )
    agents = (
        Agent("A", provider_a, plan.system_a.text, plan.params_a),
        Agent("B", provider_b, plan.system_b.text, plan.params_b),
    )
    return PreparedDialogue(settings, agents, [stored.root], stored.replicate)


def resume_dialogue(
    dialogue: Dialogue,
    path: list[NodeRecord],
    prompts: Mapping[str, str],
    pool: ProviderPool,
    registry: Registry | None = None,
    done: Collection[str] = (),
) -> PreparedDialogue:
    """What the engine needs to continue a stored dialogue along ``path`` (root to leaf);
    ``prompts`` maps prompt hashes to their text (the system prompts and the measures'), and
    ``done`` lists the side answers already stored (``protocol.side_key``)."""
    registry = registry or default_registry()
    spec_a, spec_b = registry.get(dialogue.model_a), registry.get(dialogue.model_b)
    known = registry
    protocol, coordination_tokens, report_tokens = build_protocol(
        dialogue.settings.get("measures", {}), prompts, lambda name: pool.get(known.get(name)), done
    )
    settings = DialogueSettings(
        dialogue_id=dialogue.id,
        max_turns=dialogue.max_turns,
        first_speaker="A" if dialogue.first_speaker == "A" else "B",
        stop_phrase=dialogue.stop_phrase or None,
        token_budget=dialogue.token_budget,
        seed=dialogue.seed,
        protocol=protocol,
        coordination_max_tokens=coordination_tokens,
        report_max_tokens=report_tokens,
    )
    stored = dialogue.settings
    # A branch the researcher edited continues with the edit's overrides (see branching).
    branch = overrides_on(path)
    system_a = branch.system_prompts.get("A", dialogue.system_prompt_a)
    system_b = branch.system_prompts.get("B", dialogue.system_prompt_b)
    agents = (
        Agent(
            "A",
            pool.get(spec_a),
            prompts[system_a],
            branch.apply(GenerationParams(**stored.get("params_a", spec_a.defaults.as_dict()))),
        ),
        Agent(
            "B",
            pool.get(spec_b),
            prompts[system_b],
            branch.apply(GenerationParams(**stored.get("params_b", spec_b.defaults.as_dict()))),
        ),
    )
    return PreparedDialogue(settings, agents, path, dialogue.replicate)


def load_dialogue(
    db: Readable, dialogue_id: str, pool: ProviderPool, *, leaf_id: str | None = None
) -> PreparedDialogue:
    """A stored dialogue, ready to continue from its head (or from ``leaf_id``)."""
    point = resume_point(db, dialogue_id, leaf_id)
    dialogue = point.dialogue
    if not point.path:
        raise ConfigError(f"dialogue {dialogue.id} has no opening stored; it cannot be continued")
    hashes = {dialogue.system_prompt_a, dialogue.system_prompt_b} | prompt_hashes(dialogue.settings.get("measures", {}))
    hashes |= set(overrides_on(point.path).system_prompts.values())
    return resume_dialogue(dialogue, point.path, prompt_texts(db, hashes), pool, done=point.done)
