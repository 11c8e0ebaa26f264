"""An experiment's plan in the database, and finding what is left to run.

The whole plan (experiment, conditions, prompts, every dialogue row and its opening) is written
in one transaction before the first model call. Either it is all there or none of it is, so
resuming never has to guess what was planned: it continues every dialogue that is not finished
from its last committed turn (``dialogue.head_node_id``, which moves in the same transaction as
the turn it points at).
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from clonechat.batch.spec import RUNTIME_KEYS, LoadedSpec
from clonechat.branching import overrides_on
from clonechat.errors import ConfigError
from clonechat.measures import prompt_hashes
from clonechat.read.connect import Readable
from clonechat.read.dialogues import prompt_texts
from clonechat.read.resume import ResumePoint, resume_points
from clonechat.registry import ProviderPool, Registry
from clonechat.session import PreparedDialogue, resume_dialogue, store_condition, store_dialogue
from clonechat.store import writes
from clonechat.store.models import Experiment

#: Statuses of a dialogue that a resume continues (failed ones only with --retry-failed).
UNFINISHED = ("pending", "running", "interrupted")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for index, inner in enumerate(value):
            out.update(_flatten(inner, f"{prefix}[{index + 1}]"))
        return out
    return {prefix: value}


def spec_changes(stored_text: str, new_text: str) -> list[str]:
    """The keys whose values differ between two spec texts (runtime keys aside)."""
    try:
        old, new = _flatten(tomllib.loads(stored_text)), _flatten(tomllib.loads(new_text))
    except tomllib.TOMLDecodeError:
        return []
    keys = sorted(k for k in set(old) | set(new) if k.split(".")[0] not in RUNTIME_KEYS and old.get(k) != new.get(k))
    return keys


def check_same_spec(db: Readable, experiment: Experiment, loaded: LoadedSpec) -> None:
    """Refuse to resume an experiment from a spec that is not the one it was started with."""
    if experiment.spec is None:
        raise ConfigError(
            f"experiment '{experiment.name}' in {db.path} was not started from a spec: "
            "choose another name, or use --new"
        )
    if experiment.spec_hash == loaded.canonical_hash:
        return
    changed = spec_changes(experiment.spec, loaded.text)
    detail = f" (changed: {', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''})" if changed else ""
    raise ConfigError(
        f"{loaded.path} differs from the spec experiment '{experiment.name}' was started with{detail}: "
        f"run with --new to start a fresh experiment, or --resume {experiment.name} to continue the stored one"
    )


@dataclass(frozen=True)
class StoredPlan:
    experiment_id: str
    #: False: another worker stored it first (the caller checks it is the same spec).
    created: bool


def store_plan(conn: Connection, loaded: LoadedSpec, name: str) -> StoredPlan:
    """Write the experiment and every planned dialogue, exactly once: under a lock on the
    name, a plan already stored (by a worker that started in the same second, on another
    host) is left as it is and its id returned."""
    existing = writes.lock_experiment_name(conn, name)
    if existing is not None:
        return StoredPlan(existing, created=False)
    experiment_id = writes.ensure_experiment(conn, name, spec=loaded.text, spec_hash=loaded.canonical_hash)
    blueprints = {c.name: c.blueprint for c in loaded.conditions}
    stored = {name: store_condition(conn, plan, experiment_id) for name, plan in blueprints.items()}
    for planned in loaded.dialogues():
        store_dialogue(
            conn,
            blueprints[planned.condition],
            experiment_id,
            replicate=planned.replicate,
            seed=planned.seed,
            first_speaker=planned.first_speaker,
            condition=stored[planned.condition],
        )
    return StoredPlan(experiment_id, created=True)


def provider_pool(loaded: LoadedSpec) -> tuple[Registry, ProviderPool]:
    """The spec's models and a pool with each model's provider already created, so a problem
    creating one fails before anything is written."""
    pool = ProviderPool()
    for condition in loaded.conditions:
        pool.get(condition.blueprint.spec_a)
        pool.get(condition.blueprint.spec_b)
    return Registry(loaded.models), pool


@dataclass(frozen=True)
class DialogueJob:
    """A dialogue to run (or continue), with the condition it belongs to."""

    condition: str
    prepared: PreparedDialogue

    @property
    def dialogue_id(self) -> str:
        return self.prepared.dialogue_id


def load_jobs(
    db: Readable,
    experiment_id: str,
    statuses: Collection[str],
    pool: ProviderPool,
    registry: Registry,
) -> list[DialogueJob]:
    """Every dialogue of the experiment in one of ``statuses``, ready to continue from its
    head, interleaved across conditions. A few queries for the whole experiment, not a few per
    dialogue, so a thousand dialogues load in well under a second."""
    return prepare_jobs(db, resume_points(db, experiment_id, statuses), pool, registry)


def load_claimed(
    db: Readable,
    experiment_id: str,
    statuses: Collection[str],
    dialogue_ids: Collection[str],
    pool: ProviderPool,
    registry: Registry,
) -> list[DialogueJob]:
    """The dialogues a worker just claimed, each ready to continue from its committed head (the
    same few queries however many were claimed at once)."""
    return prepare_jobs(db, resume_points(db, experiment_id, statuses, dialogue_ids), pool, registry)


def prepare_jobs(db: Readable, points: list[ResumePoint], pool: ProviderPool, registry: Registry) -> list[DialogueJob]:
    """The stored dialogues at ``points`` as jobs: agents, settings and the prompts they need."""
    for point in points:
        if not point.path:
            raise ConfigError(f"dialogue {point.dialogue.id} has no opening stored; it cannot be continued")
    # The system prompts, the measures' prompts, and those of a researcher's edits on the path
    # (a fork with an edited system prompt, see branching).
    hashes = {h for p in points for h in (p.dialogue.system_prompt_a, p.dialogue.system_prompt_b)}
    hashes |= {h for p in points for h in prompt_hashes(p.dialogue.settings.get("measures", {}))}
    hashes |= {h for p in points for h in overrides_on(p.path).system_prompts.values()}
    prompts = prompt_texts(db, hashes)
    return [
        DialogueJob(p.condition, resume_dialogue(p.dialogue, p.path, prompts, pool, registry, p.done)) for p in points
    ]
