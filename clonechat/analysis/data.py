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
