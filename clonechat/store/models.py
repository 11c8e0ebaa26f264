"""The run database's tables (SQLModel).

A dialogue is a tree of ``node`` rows: each message points at its parent, so a conversation is
a path from the root (the opening) to a leaf, and a branch is just another child. Prompts are
stored once by content hash. Scores are rows of their own so runs can be re-scored without
touching turns. All times are UTC. The schema is created and upgraded only by
``clonechat.store.migrations``; a test checks the migrations produce exactly these tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class Experiment(SQLModel, table=True):
    """A named set of conditions; ad-hoc runs go into the experiment ``adhoc``."""

    id: str = Field(primary_key=True)
    name: str = Field(unique=True)
    #: The spec as the user wrote it (TOML text), for exact resume and provenance.
    spec: str | None = None
    spec_hash: str | None = None
    created_at: datetime = Field(default_factory=_now)


class Condition(SQLModel, table=True):
    """One arm of an experiment: a framing template and the models on each side."""

    __table_args__ = (UniqueConstraint("experiment_id", "name"),)
    id: str = Field(primary_key=True)
    experiment_id: str = Field(foreign_key="experiment.id", index=True)
    name: str
    template: str
    model_a: str
    model_b: str
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=_now)


class PromptTemplate(SQLModel, table=True):
    """A template file's text, stored once under its hash."""

    __tablename__ = "prompt_template"
    hash: str = Field(primary_key=True)
    kind: str
    name: str
    source: str
    created_at: datetime = Field(default_factory=_now)


class Prompt(SQLModel, table=True):
    """A rendered prompt: the exact text a model saw, stored once under its hash."""

    hash: str = Field(primary_key=True)
    template_hash: str = Field(foreign_key="prompt_template.hash", index=True)
    text: str
    variables: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=_now)


class Dialogue(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("condition_id", "replicate"),)
    id: str = Field(primary_key=True)
    condition_id: str = Field(foreign_key="condition.id", index=True)
    replicate: int
    seed: int | None = None
    #: pending, running, completed, interrupted or failed.
    status: str = Field(default="pending", index=True)
    #: max_turns, stop_phrase, token_budget, context_full, cancelled or error.
    stop_reason: str | None = None
    error: str | None = None
    first_speaker: str
    max_turns: int
    token_budget: int | None = None
    stop_phrase: str | None = None
    model_a: str
    model_b: str
    system_prompt_a: str = Field(foreign_key="prompt.hash")
    system_prompt_b: str = Field(foreign_key="prompt.hash")
    opening_prompt: str = Field(foreign_key="prompt.hash")
    #: Generation parameters of each agent and anything else needed to continue the dialogue.
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: The leaf of the most recently extended path: what ``show`` prints by default.
    head_node_id: str | None = None
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class Node(SQLModel, table=True):
    """One message in a dialogue tree."""

    id: str = Field(primary_key=True)
    dialogue_id: str = Field(foreign_key="dialogue.id", index=True)
    parent_id: str | None = Field(default=None, foreign_key="node.id", index=True)
    #: A, B or researcher.
    speaker: str
    #: opening, turn, error, prediction, report or coordination.
    kind: str
    #: 0 for the opening, then 1, 2, ... along a path.
    turn_index: int
    content: str
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prompt_tokens: int | None = None
    prompt_tokens_evaluated: int | None = None
    prompt_tokens_cached: int | None = None
    completion_tokens: int | None = None
    time_to_first_token_ms: float | None = None
    latency_ms: float | None = None
    #: stop, length, stop_sequence or context_full.
    finish_reason: str | None = None
    error: str | None = None
    #: For a prediction: the turn it predicts.
    target_node_id: str | None = Field(default=None, foreign_key="node.id", index=True)
    #: For a side-channel node: partner/self/cross (prediction), TASK@before|after (coordination).
    variant: str | None = None
    created_at: datetime = Field(default_factory=_now)


class Score(SQLModel, table=True):
    """One scorer's verdict on one node; re-scoring adds a row for a new scorer version."""

    __table_args__ = (UniqueConstraint("node_id", "scorer", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    node_id: str = Field(foreign_key="node.id", index=True)
    scorer: str
    version: str
    value: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=_now)
