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

    #: ULID.
    id: str = Field(primary_key=True)
    #: The name commands take (``clonechat report NAME``): the spec's ``name``, or ``adhoc``.
    name: str = Field(unique=True)
    #: The spec as the user wrote it (TOML text), for exact resume and provenance.
    spec: str | None = None
    #: SHA-256 of the spec's meaning (comments and layout ignored): a changed spec is refused on resume.
    spec_hash: str | None = None
    #: UTC.
    created_at: datetime = Field(default_factory=_now)


class Condition(SQLModel, table=True):
    """One arm of an experiment: a framing template and the models on each side."""

    __table_args__ = (UniqueConstraint("experiment_id", "name"),)
    #: ULID.
    id: str = Field(primary_key=True)
    experiment_id: str = Field(foreign_key="experiment.id", index=True)
    #: Unique within the experiment (default: the template's name).
    name: str
    #: Framing template in ``prompts/conditions/`` (clone-aware, told-other-ai, told-human, no-frame).
    template: str
    #: Model name of agent A (a registry name such as ``local``).
    model_a: str
    #: Model name of agent B: the same as A for a clone pair.
    model_b: str
    #: The condition's resolved settings (JSON): parameters, measures, prompts.
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: UTC.
    created_at: datetime = Field(default_factory=_now)


class PromptTemplate(SQLModel, table=True):
    """A template file's text, stored once under its hash."""

    __tablename__ = "prompt_template"
    #: SHA-256 of the source.
    hash: str = Field(primary_key=True)
    #: conditions, openings, predictions, coordination, reports, judges, recognition,
    #: interjections, or researcher-edit.
    kind: str
    #: The file's name without extension (``system`` for a researcher's edit).
    name: str
    #: The template file's text.
    source: str
    #: UTC.
    created_at: datetime = Field(default_factory=_now)


class Prompt(SQLModel, table=True):
    """A rendered prompt: the exact text a model saw, stored once under its hash."""

    #: SHA-256 of the text.
    hash: str = Field(primary_key=True)
    template_hash: str = Field(foreign_key="prompt_template.hash", index=True)
    #: Exactly what the model was given.
    text: str
    #: The template variables it was rendered with (JSON).
    variables: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: UTC.
    created_at: datetime = Field(default_factory=_now)


class Dialogue(SQLModel, table=True):
    """One replicate of a condition: a tree of nodes whose root is the opening."""

    __table_args__ = (UniqueConstraint("condition_id", "replicate"),)
    #: ULID.
    id: str = Field(primary_key=True)
    condition_id: str = Field(foreign_key="condition.id", index=True)
    #: 1, 2, ... within the condition.
    replicate: int
    #: Sampling seed; each turn's seed derives from it and the turn index.
    seed: int | None = None
    #: pending, running, completed, interrupted or failed.
    status: str = Field(default="pending", index=True)
    #: max_turns, stop_phrase, token_budget, context_full, converged (the spec's convergence
    #: rule), stopped, cancelled or error.
    stop_reason: str | None = None
    #: Why it failed, one line (a failed model call, after retries).
    error: str | None = None
    #: A or B.
    first_speaker: str
    #: Turns (both agents together) at which it stops.
    max_turns: int
    #: Stop once both agents together generated this many tokens.
    token_budget: int | None = None
    #: Either agent ends the dialogue by writing it (``^C^C`` by default).
    stop_phrase: str | None = None
    #: Model name of agent A.
    model_a: str
    #: Model name of agent B.
    model_b: str
    #: A's system prompt (hash into ``prompt``).
    system_prompt_a: str = Field(foreign_key="prompt.hash")
    #: B's system prompt (hash into ``prompt``).
    system_prompt_b: str = Field(foreign_key="prompt.hash")
    #: The researcher's opening message (hash into ``prompt``).
    opening_prompt: str = Field(foreign_key="prompt.hash")
    #: Generation parameters of each agent and anything else needed to continue the dialogue.
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: The leaf of the most recently extended path: what ``show`` prints by default.
    head_node_id: str | None = None
    #: UTC.
    created_at: datetime = Field(default_factory=_now)
    #: UTC, when its status or head last changed.
    updated_at: datetime = Field(default_factory=_now)


class Node(SQLModel, table=True):
    """One message in a dialogue tree."""

    #: ULID (sorts by creation time).
    id: str = Field(primary_key=True)
    dialogue_id: str = Field(foreign_key="dialogue.id", index=True)
    #: The message before it (NULL for the opening); siblings are branches.
    parent_id: str | None = Field(default=None, foreign_key="node.id", index=True)
    #: A, B or researcher.
    speaker: str
    #: opening, turn, error, prediction, report, coordination or recognition. A researcher's
    #: message on the path (an interjection) is a ``turn`` with speaker ``researcher``.
    kind: str
    #: 0 for the opening, then 1, 2, ... along a path.
    turn_index: int
    #: The message text.
    content: str
    #: The model that wrote it (``researcher-edit`` for a researcher's fork).
    model: str | None = None
    #: Generation parameters it was written with (JSON); on a fork, the branch's overrides.
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: Tokens in the request.
    prompt_tokens: int | None = None
    #: Prompt tokens the model had to evaluate (not cached).
    prompt_tokens_evaluated: int | None = None
    #: Prompt tokens reused from a cache (KV cache, server prompt cache).
    prompt_tokens_cached: int | None = None
    #: Tokens generated.
    completion_tokens: int | None = None
    #: From request to first token.
    time_to_first_token_ms: float | None = None
    #: From request to last token.
    latency_ms: float | None = None
    #: stop, length, stop_sequence or context_full.
    finish_reason: str | None = None
    #: For an ``error`` node: what failed.
    error: str | None = None
    #: For a prediction: the turn it predicts; for a recognition answer: the turn shown.
    target_node_id: str | None = Field(default=None, foreign_key="node.id", index=True)
    #: For a side-channel node: partner/self/cross (prediction), TASK@before|after (coordination),
    #: the position asked (recognition); for a researcher's turn, its addressee A or B (NULL: both).
    variant: str | None = None
    #: UTC.
    created_at: datetime = Field(default_factory=_now)
    #: The model's private reasoning before this message (NULL: none); never part of any view.
    reasoning: str | None = None
    #: Reasoning tokens, where the server reports them apart (inside ``completion_tokens``).
    reasoning_tokens: int | None = None
    #: Prompt tokens written to a prompt cache (Anthropic ``cache_creation_input_tokens``).
    prompt_tokens_cache_written: int | None = None
    #: What the call cost in US dollars (NULL: the model's prices are not known).
    cost_usd: float | None = None


class Score(SQLModel, table=True):
    """One scorer's verdict on one node; re-scoring adds a row for a new scorer version."""

    __table_args__ = (UniqueConstraint("node_id", "scorer", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    #: The scored node: a prediction, a coordination answer (scorer ``answer``), a recognition
    #: answer (``recognition``: 1 right, 0 wrong, NULL unreadable) or a turn (the self-knowledge
    #: log-probabilities ``logprob_own``, ``logprob_partner_view``, ``logprob_other_model``).
    node_id: str = Field(foreign_key="node.id", index=True)
    #: ``NAME`` (against the actual message), ``NAME~shuffled`` (against the shuffled control), or ``answer``.
    scorer: str
    #: The scorer's version: a changed scorer adds rows beside the old ones.
    version: str
    #: The score (most in 0..1; NULL for ``answer`` rows and unavailable scores).
    value: float | None = None
    #: Scorer specifics (JSON): ``against`` (the node scored against), the normalised ``answer``, ...
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: UTC.
    created_at: datetime = Field(default_factory=_now)


class TurnMetrics(SQLModel, table=True):
    """Conversation metrics of one agent turn, computed when it is stored
    (``clonechat.store.turn_metrics`` defines each column)."""

    __tablename__ = "turn_metrics"
    #: The turn (a ``node`` of kind ``turn``).
    node_id: str = Field(primary_key=True, foreign_key="node.id")
    dialogue_id: str = Field(foreign_key="dialogue.id", index=True)
    #: The metric definitions' version.
    version: int
    #: Characters in the turn.
    chars: int
    #: Words: case-folded runs of letters, digits, ``_`` and inner apostrophes.
    words: int
    #: Distinct words in the turn.
    distinct_words: int
    #: Distinct words not used earlier on the path (vocabulary growth).
    new_words: int
    #: Distinct words on the path so far.
    vocabulary: int
    #: Jaccard overlap of word sets with the partner's latest turn.
    overlap_partner: float | None = None
    #: Jaccard overlap of word sets with the speaker's own previous turn.
    overlap_self: float | None = None
    #: Share of word trigrams already seen in this turn or either agent's latest turn.
    repetition: float | None = None
    #: Share of non-space characters that are punctuation or symbols, emoji excepted.
    symbol_rate: float
    #: Share of non-space characters that are emoji.
    emoji_rate: float


class Worker(SQLModel, table=True):
    """One ``clonechat batch`` process taking part in an experiment (on any host). Its row is
    the heartbeat ``clonechat workers`` shows; its leases say which dialogues it runs."""

    #: ULID, new for every process.
    id: str = Field(primary_key=True)
    experiment_id: str = Field(foreign_key="experiment.id", index=True)
    #: The host name it runs on (for people, not for the protocol).
    host: str
    #: Its process id on that host.
    pid: int
    #: Dialogues it runs at once.
    concurrency: int
    #: How long its leases last without a heartbeat (``--lease``), in seconds.
    lease_seconds: float
    #: UTC (the database server's clock on PostgreSQL).
    started_at: datetime = Field(default_factory=_now)
    #: Its last heartbeat, UTC.
    heartbeat_at: datetime = Field(default_factory=_now)
    #: When it finished cleanly (NULL while it runs, or if it was killed).
    stopped_at: datetime | None = None


class Lease(SQLModel, table=True):
    """Who may write a dialogue now: one row per dialogue ever claimed. A worker holds it while
    ``expires_at`` is in the future and renews it with each heartbeat; ``epoch`` (the fencing
    token) goes up by one at every grant, and every write of a turn checks it in the same
    transaction, so a worker that lost its lease can never write again."""

    dialogue_id: str = Field(primary_key=True, foreign_key="dialogue.id")
    worker_id: str = Field(foreign_key="worker.id", index=True)
    #: The fencing token: the number of the grant in force.
    epoch: int
    #: UTC; past it, any worker may take the dialogue over.
    expires_at: datetime
    #: UTC of the last renewal.
    renewed_at: datetime


class LeaseGrant(SQLModel, table=True):
    """The lease history: one row per grant, never deleted, so a run can be audited (no dialogue
    ever had two writers: each grant starts after the previous one ended or expired)."""

    __tablename__ = "lease_grant"
    dialogue_id: str = Field(primary_key=True, foreign_key="dialogue.id")
    #: The grant's fencing token (``lease.epoch`` while it is in force).
    epoch: int = Field(primary_key=True)
    worker_id: str = Field(foreign_key="worker.id", index=True)
    #: UTC.
    granted_at: datetime
    #: When the lease this grant replaced ran out (its last renewal plus the lease, or its
    #: release): a grant never starts before it, so grants of one dialogue never overlap.
    replaced_expires_at: datetime | None = None
    #: The dialogue's head when it was granted: where the worker continued from.
    head_at_grant: str | None = None
    #: UTC of its release by the worker (NULL: it expired, or is still in force).
    released_at: datetime | None = None
    #: Why it was released: ``ended`` (the dialogue ended), ``stopped`` (the worker stopped).
    release: str | None = None
