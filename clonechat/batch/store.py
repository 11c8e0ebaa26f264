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
from sqlmodel import col, select

from clonechat.batch.spec import RUNTIME_KEYS, LoadedSpec
from clonechat.branching import overrides_on
from clonechat.engine.records import NodeRecord
from clonechat.errors import ConfigError
from clonechat.measures import prompt_hashes
from clonechat.registry import ProviderPool, Registry
from clonechat.session import PreparedDialogue, resume_dialogue, store_condition, store_dialogue
from clonechat.store import reads, writes
from clonechat.store.database import Database
from clonechat.store.models import Condition, Dialogue, Experiment, Node, Prompt

#: Statuses of a dialogue that a resume continues (failed ones only with --retry-failed).
UNFINISHED = ("pending", "running", "interrupted")


def find_experiment(db: Database, name: str) -> Experiment | None:
    with db.session() as session:
        return session.exec(select(Experiment).where(col(Experiment.name) == name)).first()


def free_name(db: Database, name: str) -> str:
    """``name`` if unused, else ``name-2``, ``name-3``, ...: for ``--new``."""
    with db.session() as session:
        taken = set(session.exec(select(Experiment.name).where(col(Experiment.name).startswith(name))).all())
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


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


def check_same_spec(db: Database, experiment: Experiment, loaded: LoadedSpec) -> None:
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


def store_plan(conn: Connection, loaded: LoadedSpec, name: str) -> str:
    """Write the experiment and every planned dialogue; returns the experiment id."""
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
    return experiment_id


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


def _path_to_head(head: str, nodes: dict[str, Node]) -> list[NodeRecord]:
    path: list[NodeRecord] = []
    current: str | None = head
    while current is not None:
        node = nodes[current]
        path.append(reads.node_record(node))
        current = node.parent_id
    path.reverse()
    return path


def load_jobs(
    db: Database,
    experiment_id: str,
    statuses: Collection[str],
    pool: ProviderPool,
    registry: Registry,
) -> list[DialogueJob]:
    """Every dialogue of the experiment in one of ``statuses``, ready to continue from its
    head, interleaved across conditions. A few queries for the whole experiment, not a few per
    dialogue, so a thousand dialogues load in well under a second."""
    with db.session() as session:
        rows = session.exec(
            select(Dialogue, Condition.name)
            .join(Condition, col(Condition.id) == col(Dialogue.condition_id))
            .where(col(Condition.experiment_id) == experiment_id, col(Dialogue.status).in_(list(statuses)))
            .order_by(col(Dialogue.replicate), col(Condition.id))
        ).all()
        in_experiment = (
            select(Dialogue.id)
            .join(Condition, col(Condition.id) == col(Dialogue.condition_id))
            .where(col(Condition.experiment_id) == experiment_id)
        )
        nodes = {
            n.id: n
            for n in session.exec(
                select(Node).where(col(Node.dialogue_id).in_(in_experiment), col(Node.kind).in_(["opening", "turn"]))
            ).all()
        }
        hashes = {h for d, _ in rows for h in (d.system_prompt_a, d.system_prompt_b)}
        hashes |= {h for d, _ in rows for h in prompt_hashes(d.settings.get("measures", {}))}
        prompts = {p.hash: p.text for p in session.exec(select(Prompt).where(col(Prompt.hash).in_(hashes))).all()}
    done = reads.side_answers(db, [d.id for d, _ in rows])
    paths: dict[str, list[NodeRecord]] = {}
    for dialogue, _ in rows:
        if dialogue.head_node_id is None:
            raise ConfigError(f"dialogue {dialogue.id} has no opening stored; it cannot be continued")
        paths[dialogue.id] = _path_to_head(dialogue.head_node_id, nodes)
    # A researcher may have forked a dialogue with an edited system prompt (branching).
    edited = {h for path in paths.values() for h in overrides_on(path).system_prompts.values()}
    prompts |= {h: reads.prompt_text(db, h) for h in edited - prompts.keys()}
    return [
        DialogueJob(
            condition, resume_dialogue(dialogue, paths[dialogue.id], prompts, pool, registry, done.get(dialogue.id, ()))
        )
        for dialogue, condition in rows
    ]


@dataclass(frozen=True)
class ConditionCounts:
    dialogues: int
    turns: int
    by_status: dict[str, int]


def experiment_counts(db: Database, experiment_id: str) -> dict[str, ConditionCounts]:
    """Per condition: how many dialogues, how many turns stored, dialogues by status."""
    summaries = reads.list_dialogues(db, experiment_id=experiment_id, limit=None)
    counts: dict[str, ConditionCounts] = {}
    for row in summaries:
        entry = counts.setdefault(row.condition, ConditionCounts(0, 0, {}))
        by_status = dict(entry.by_status)
        by_status[row.status] = by_status.get(row.status, 0) + 1
        counts[row.condition] = ConditionCounts(entry.dialogues + 1, entry.turns + row.turns, by_status)
    return counts
