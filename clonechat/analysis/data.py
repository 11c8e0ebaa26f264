"""What a report is made of: plain rows loaded from the run database.

The loader (``load_report_data``) is the only part that reads the database (through
:mod:`clonechat.read`); the statistics and the report writer work on these dataclasses, so they
can be tested on synthetic data with a known answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from clonechat.read.spending import Spending

#: Who predicted: the partner (the other clone), the speaker itself, or a different model
#: given the partner's view.
PredictionVariant = str  # "partner" | "self" | "cross"


@dataclass(frozen=True)
class ConditionInfo:
    name: str
    template: str
    model_a: str
    model_b: str
    dialogues: int
    completed: int
    turns: int

    @property
    def cross_model(self) -> bool:
        return self.model_a != self.model_b


@dataclass(frozen=True)
class PredictionScore:
    """One scorer's value for one prediction, beside the same prediction scored against a
    message from another dialogue of the same condition (the shuffled baseline)."""

    condition: str
    dialogue_id: str
    #: The turn the prediction is of (1-based along the dialogue).
    turn_index: int
    variant: PredictionVariant
    scorer: str
    value: float
    #: The shuffled-baseline value of the same prediction, if one could be computed.
    baseline: float | None = None


@dataclass(frozen=True)
class CoordinationPair:
    """Both agents' answers to one coordination question in one dialogue (normalised)."""

    condition: str
    dialogue_id: str
    task: str
    #: "before" or "after" the dialogue.
    phase: str
    answer_a: str
    answer_b: str

    @property
    def match(self) -> bool:
        return self.answer_a != "" and self.answer_a == self.answer_b


@dataclass(frozen=True)
class ReportBack:
    condition: str
    dialogue_id: str
    speaker: str
    model: str
    text: str


@dataclass(frozen=True)
class RecognitionAnswer:
    """One self-recognition answer: an agent shown a turn of its dialogue without its speaker,
    asked whether it wrote it (``correct`` None: unreadable, or not scored yet)."""

    condition: str
    dialogue_id: str
    #: The agent asked.
    asked: str
    model: str
    #: Whether the turn shown was the asked agent's own (the truth).
    own: bool
    correct: float | None
    #: The answer as its template's rule read it (``""``: nothing to read; None: not scored yet).
    answer: str | None

    @property
    def claims_own(self) -> bool | None:
        """Whether the agent said it wrote the turn (None when its answer could not be read)."""
        if self.correct is None:
            return None
        return self.own == (self.correct == 1.0)


#: The three terms of the self-knowledge decomposition (Song, Hu & Mahowald 2025): the
#: message's log-probability under (a) the speaker's model and own context, (b) the speaker's
#: model and the partner's view, (c) a different model and the partner's view.
SelfKnowledgeTerm = str  # "a" | "b" | "c"


@dataclass(frozen=True)
class SelfKnowledgeScore:
    """One term of one turn's decomposition: the turn's total log-probability, in nats."""

    condition: str
    dialogue_id: str
    turn_index: int
    speaker: str
    term: SelfKnowledgeTerm
    value: float


@dataclass(frozen=True)
class InterjectionPoint:
    """A researcher's interjection on a dialogue's path."""

    condition: str
    dialogue_id: str
    #: Its depth on the path: turns before it have smaller indices, turns after it larger ones.
    turn_index: int
    #: ``A`` or ``B``; None for both.
    to: str | None


@dataclass(frozen=True)
class TurnOverlap:
    """An agent turn's lexical overlap with its partner's latest turn (``turn_metrics``)."""

    condition: str
    dialogue_id: str
    turn_index: int
    speaker: str
    overlap_partner: float


@dataclass(frozen=True)
class DialogueEnding:
    """How a dialogue ended, and where (if anywhere) its condition's convergence rule was met."""

    dialogue_id: str
    condition: str
    stop_reason: str | None
    #: The agent turn (1-based count) at which the rule was first met on the head path, replayed
    #: over the stored transcript (None: never, or the condition has no rule).
    converged_at: int | None = None
    status: str = "completed"
    #: Agent turns on the head path.
    agent_turns: int = 0

    @property
    def converged(self) -> bool:
        return self.converged_at is not None or self.stop_reason == "converged"


@dataclass(frozen=True)
class ScheduledInterjection:
    at: int
    #: ``A``, ``B`` or ``both``.
    to: str


@dataclass(frozen=True)
class ConvergenceSetting:
    metric: str
    threshold: float
    turns: int
    #: ``stop`` or ``mark``.
    action: str = "stop"

    def describe(self, *, action: bool = True) -> str:
        """``overlap_partner ≥ 0.80 for 3 turns (stop)`` (without `` (stop)`` unless ``action``)."""
        noun = "turn" if self.turns == 1 else "turns"
        text = f"{self.metric} ≥ {self.threshold:.2f} for {self.turns} {noun}"
        return f"{text} ({self.action})" if action else text


@dataclass(frozen=True)
class ConditionMeasures:
    """Which of the newer measures a condition turns on (from its stored settings)."""

    recognition: bool = False
    self_knowledge: bool = False
    interjections: tuple[ScheduledInterjection, ...] = ()
    convergence: ConvergenceSetting | None = None


@dataclass(frozen=True)
class ReportData:
    experiment: str
    created_at: datetime
    spec_text: str
    #: The condition others are compared with (the spec's ``control``), if any.
    control: str | None
    conditions: list[ConditionInfo]
    predictions: list[PredictionScore] = field(default_factory=list)
    coordination: list[CoordinationPair] = field(default_factory=list)
    reports: list[ReportBack] = field(default_factory=list)
    #: What the experiment spent (dollars where prices are known, and tokens).
    spending: Spending | None = None
    recognition: list[RecognitionAnswer] = field(default_factory=list)
    self_knowledge: list[SelfKnowledgeScore] = field(default_factory=list)
    interjections: list[InterjectionPoint] = field(default_factory=list)
    #: Per-turn overlap with the partner (loaded when a condition has interjections).
    overlaps: list[TurnOverlap] = field(default_factory=list)
    endings: list[DialogueEnding] = field(default_factory=list)
    #: The newer measures each condition turns on, by condition name.
    measures: dict[str, ConditionMeasures] = field(default_factory=dict)

    def measures_of(self, condition: str) -> ConditionMeasures:
        return self.measures.get(condition, ConditionMeasures())
