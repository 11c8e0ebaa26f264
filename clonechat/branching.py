"""Branches a researcher makes: an edited message stored as a new sibling of the original,
with the settings the conversation below it continues with.

Loom-style: nothing is overwritten. The edit is a node of its own (``model =
"researcher-edit"``) and its ``params`` hold the branch's overrides: generation parameters
(``temperature``, ``max_tokens``, ...) and the agents' system prompts (``system_prompt_a`` /
``system_prompt_b``, prompt hashes; the text is in the ``prompt`` table). Keeping them on the
node makes them data: any later continuation of that branch, from the TUI or elsewhere, runs as
the researcher asked, and an analysis can see exactly which turns ran under which settings.
An edit lower on a path overrides one above it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from sqlalchemy import Connection

from clonechat.engine.records import AgentName, NodeRecord, new_id, utcnow
from clonechat.errors import ConfigError, NotFoundError
from clonechat.providers.base import GenerationParams
from clonechat.read.connect import Readable
from clonechat.read.dialogues import get_dialogue, prompt_texts
from clonechat.read.paths import node_record, nodes_by_id, path_to
from clonechat.store import writes
from clonechat.store.database import Database
from clonechat.store.writer import open_writer

#: ``Node.model`` of a message the researcher wrote or edited.
EDIT_MODEL = "researcher-edit"
#: Where an edit node keeps each agent's system prompt override (a prompt hash).
SYSTEM_PROMPT_KEYS: Mapping[AgentName, str] = {"A": "system_prompt_a", "B": "system_prompt_b"}
#: Generation parameters a branch may override.
PARAM_NAMES = frozenset(f.name for f in fields(GenerationParams))


@dataclass(frozen=True)
class BranchOverrides:
    """What a path's edits change from the dialogue's stored settings."""

    params: Mapping[str, Any] = field(default_factory=dict)
    #: Agent name to prompt hash.
    system_prompts: Mapping[AgentName, str] = field(default_factory=dict)

    def apply(self, params: GenerationParams) -> GenerationParams:
        return replace(params, **self.params) if self.params else params


def overrides_on(path: Sequence[NodeRecord]) -> BranchOverrides:
    """The overrides in force at the end of ``path`` (root to leaf): every edit's, the lower winning."""
    params: dict[str, Any] = {}
    prompts: dict[AgentName, str] = {}
    for node in path:
        if node.model != EDIT_MODEL:
            continue
        params.update({k: v for k, v in node.params.items() if k in PARAM_NAMES})
        for agent, key in SYSTEM_PROMPT_KEYS.items():
            if isinstance(value := node.params.get(key), str):
                prompts[agent] = value
    return BranchOverrides(params, prompts)


@dataclass(frozen=True)
class AgentSettings:
    """What one agent generates with at some point of a branch."""

    system_prompt: str
    params: GenerationParams


def settings_at(db: Readable, node_id: str) -> dict[AgentName, AgentSettings]:
    """Each agent's system prompt and parameters in force below ``node_id``: the dialogue's
    stored settings with the overrides of every edit from the root down to ``node_id``."""
    path = [node_record(n) for n in path_to(db, node_id)]
    dialogue = get_dialogue(db, path[-1].dialogue_id)
    if dialogue is None:
        raise NotFoundError(f"node {node_id} belongs to no dialogue in {db.path}")
    branch = overrides_on(path)
    stored: dict[AgentName, str] = {"A": dialogue.system_prompt_a, "B": dialogue.system_prompt_b}
    hashes = {agent: branch.system_prompts.get(agent, stored[agent]) for agent in stored}
    texts = prompt_texts(db, set(hashes.values()))
    return {
        agent: AgentSettings(
            texts[hashes[agent]],
            branch.apply(GenerationParams(**dialogue.settings.get(f"params_{agent.lower()}", {}))),
        )
        for agent in stored
    }


def check_params(params: Mapping[str, Any]) -> None:
    """Refuse a parameter the engine does not know, naming it, before anything is stored."""
    unknown = sorted(set(params) - PARAM_NAMES)
    if unknown:
        raise ConfigError(
            f"unknown generation parameter: {', '.join(unknown)} (known: {', '.join(sorted(PARAM_NAMES))})"
        )
    temperature = params.get("temperature")
    if temperature is not None and not 0 <= float(temperature) <= 2:
        raise ConfigError(f"temperature must be between 0 and 2 (got {temperature})")
    max_tokens = params.get("max_tokens")
    if max_tokens is not None and int(max_tokens) < 1:
        raise ConfigError(f"max_tokens must be at least 1 (got {max_tokens})")


async def fork_with_edit(
    db: Database,
    node_id: str,
    content: str,
    *,
    params: Mapping[str, Any] | None = None,
    system_prompts: Mapping[AgentName, str] | None = None,
) -> NodeRecord:
    """Store ``content`` as a new sibling of ``node_id`` (the researcher's edit of that message)
    with the branch's overrides: ``params`` (generation parameters) and ``system_prompts``
    (agent name to the new text; stored once in the prompt table). Continuing from the
    returned node grows a new branch; the original stays untouched."""
    overrides: dict[str, Any] = dict(params or {})
    check_params(overrides)
    found = nodes_by_id(db, [node_id])
    if node_id not in found:
        raise NotFoundError(f"no node with id {node_id!r} in {db.path}")
    original = node_record(found[node_id])
    prompts = dict(system_prompts or {})
    for agent, text in prompts.items():
        if not text.strip():
            raise ConfigError(f"the system prompt of {agent} is empty")
    edited = replace(
        original,
        id=new_id(),
        content=content,
        model=EDIT_MODEL,
        params={},
        prompt_tokens=None,
        prompt_tokens_evaluated=None,
        prompt_tokens_cached=None,
        completion_tokens=None,
        time_to_first_token_ms=None,
        latency_ms=None,
        finish_reason=None,
        created_at=utcnow(),
    )

    def store(conn: Connection) -> NodeRecord:
        stored = dict(overrides)
        for agent, text in prompts.items():
            stored[SYSTEM_PROMPT_KEYS[agent]] = writes.store_edited_prompt(conn, text)
        node = replace(edited, params=stored)
        writes.insert_nodes_and_heads(conn, [node])
        return node

    async with open_writer(db) as writer:
        return await writer.call(store)


__all__ = [
    "EDIT_MODEL",
    "AgentSettings",
    "BranchOverrides",
    "check_params",
    "fork_with_edit",
    "overrides_on",
    "settings_at",
]
