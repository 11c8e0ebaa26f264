"""Setting a dialogue up in the store and continuing stored ones.

This is the glue the CLI, the TUI and the batch runner share: render the prompts (so template
errors surface before anything is written), record experiment, condition, prompts and the
dialogue row, and hand the engine its settings, agents and starting path.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sqlalchemy import Connection

from clonechat.engine.dialogue import DEFAULT_STOP_PHRASE, Agent, DialogueSettings, opening_node
from clonechat.engine.records import AgentName, NodeRecord, new_id
from clonechat.errors import ConfigError, TemplateError
from clonechat.prompts import PromptLibrary, RenderedPrompt
from clonechat.providers.base import GenerationParams
from clonechat.registry import ModelSpec, ProviderPool, get_model
from clonechat.store import reads, writes
from clonechat.store.database import Database
from clonechat.store.writer import StoreWriter

ADHOC_EXPERIMENT = "adhoc"


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
    variables: Mapping[str, str] = field(default_factory=dict)

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


def _params(spec: ModelSpec, request: DialogueRequest) -> GenerationParams:
    params = spec.defaults
    if request.temperature is not None:
        params = replace(params, temperature=request.temperature)
    if request.max_tokens is not None:
        params = replace(params, max_tokens=request.max_tokens)
    return params


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

    def values(own: ModelSpec, partner: ModelSpec) -> dict[str, object]:
        return {
            "model_name": own.display_name,
            "partner_model_name": partner.display_name,
            "stop_phrase": request.stop_phrase,
            "max_turns": request.max_turns,
            **request.variables,
        }

    return (
        condition.render(values(spec_a, spec_b)),
        condition.render(values(spec_b, spec_a)),
        opening.render(values(spec_a, spec_b)),
    )


async def prepare_dialogue(
    writer: StoreWriter,
    request: DialogueRequest,
    pool: ProviderPool,
    library: PromptLibrary | None = None,
) -> PreparedDialogue:
    """Validate ``request``, store a new dialogue with its opening, and return what the engine
    needs to run it. Nothing is written if the request is invalid."""
    library = library or PromptLibrary()
    spec_a = get_model(request.model_a)
    spec_b = get_model(request.model_b or request.model_a)
    system_a, system_b, opening = _render_prompts(request, spec_a, spec_b, library)
    params_a, params_b = _params(spec_a, request), _params(spec_b, request)
    provider_a, provider_b = pool.get(spec_a), pool.get(spec_b)
    seed = request.seed if request.seed is not None else random.randrange(2**31)
    models = spec_a.name if spec_a.name == spec_b.name else f"{spec_a.name}+{spec_b.name}"
    condition_name = f"{request.condition}:{models}"
    dialogue_id = new_id()

    def create(conn: Connection) -> tuple[int, AgentName, NodeRecord]:
        experiment_id = writes.ensure_experiment(conn, request.experiment)
        condition_id = writes.ensure_condition(
            conn,
            experiment_id,
            condition_name,
            request.condition,
            spec_a.name,
            spec_b.name,
            {"opening": request.opening, "variables": dict(request.variables)},
        )
        hashes = [writes.store_prompt(conn, prompt) for prompt in (system_a, system_b, opening)]
        replicate = writes.next_replicate(conn, condition_id)
        # Who speaks first alternates across replicates, so position effects average out.
        first: AgentName = request.first_speaker or ("A" if replicate % 2 == 1 else "B")
        writes.create_dialogue(
            conn,
            writes.NewDialogue(
                id=dialogue_id,
                condition_id=condition_id,
                replicate=replicate,
                seed=seed,
                first_speaker=first,
                max_turns=request.max_turns,
                token_budget=request.token_budget,
                stop_phrase=request.stop_phrase,
                model_a=spec_a.name,
                model_b=spec_b.name,
                system_prompt_a=hashes[0],
                system_prompt_b=hashes[1],
                opening_prompt=hashes[2],
                settings={"params_a": params_a.as_dict(), "params_b": params_b.as_dict()},
            ),
        )
        root = opening_node(dialogue_id, opening.text)
        writes.insert_nodes(conn, [root])
        writes.update_dialogue(conn, dialogue_id, head_node_id=root.id)
        return replicate, first, root

    replicate, first, root = await writer.call(create)
    settings = DialogueSettings(
        dialogue_id=dialogue_id,
        max_turns=request.max_turns,
        first_speaker=first,
        stop_phrase=request.stop_phrase or None,
        token_budget=request.token_budget,
        seed=seed,
    )
    agents = (
        Agent("A", provider_a, system_a.text, params_a),
        Agent("B", provider_b, system_b.text, params_b),
    )
    return PreparedDialogue(settings, agents, [root], replicate)


def load_dialogue(
    db: Database, dialogue_id: str, pool: ProviderPool, *, leaf_id: str | None = None
) -> PreparedDialogue:
    """A stored dialogue, ready to continue from its head (or from ``leaf_id``)."""
    dialogue = reads.resolve_dialogue(db, dialogue_id)
    leaf = leaf_id or dialogue.head_node_id
    if leaf is None:
        raise ConfigError(f"dialogue {dialogue.id} has no opening stored; it cannot be continued")
    path = [reads.node_record(node) for node in reads.path_to(db, leaf)]
    spec_a, spec_b = get_model(dialogue.model_a), get_model(dialogue.model_b)
    settings = DialogueSettings(
        dialogue_id=dialogue.id,
        max_turns=dialogue.max_turns,
        first_speaker="A" if dialogue.first_speaker == "A" else "B",
        stop_phrase=dialogue.stop_phrase or None,
        token_budget=dialogue.token_budget,
        seed=dialogue.seed,
    )
    stored = dialogue.settings
    agents = (
        Agent(
            "A",
            pool.get(spec_a),
            reads.prompt_text(db, dialogue.system_prompt_a),
            GenerationParams(**stored.get("params_a", spec_a.defaults.as_dict())),
        ),
        Agent(
            "B",
            pool.get(spec_b),
            reads.prompt_text(db, dialogue.system_prompt_b),
            GenerationParams(**stored.get("params_b", spec_b.defaults.as_dict())),
        ),
    )
    return PreparedDialogue(settings, agents, path, dialogue.replicate)
