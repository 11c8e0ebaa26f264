"""Primary measures: the comparisons a spec commits to before the data are in.

A spec lists them under ``primary`` (validated with the rest of the spec when it is loaded, and
read back from the stored spec when the report is written, so they cannot drift)::

    control = "told-human"

    [[primary]]
    scorer = "chrf"            # a prediction measure: this scorer ...
    variant = "partner"        # ... of these predictions (partner, self or cross)
    comparison = "chance"      # against chance, the control, or (partner only) self-prediction
    condition = "clone-aware"  # optional: one condition (default: every condition)

    [[primary]]
    task = "number"            # a coordination measure: this task ...
    phase = "after"            # ... asked before or after the dialogue
    comparison = "chance"      # against chance, or clone pairs against cross-model pairs

Every comparison a report makes has a :class:`ComparisonKey`; the ones a primary entry matches
are tested as planned (Holm within their family), every other one is exploratory (see
:mod:`clonechat.analysis.multiplicity`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Comparison = Literal["chance", "control", "self", "cross-model"]


@dataclass(frozen=True)
class ComparisonKey:
    """What one comparison of a report is: the measure, its condition and what it is compared with."""

    #: "prediction" or "coordination".
    measure: str
    #: The scorer (prediction) or the task (coordination).
    name: str
    #: The condition; "" for a comparison pooled over conditions (clone vs cross-model pairs).
    condition: str
    #: The prediction variant (partner, self, cross) or the coordination phase (before, after).
    detail: str
    comparison: str


class PrimaryMeasure(BaseModel):
    """One ``[[primary]]`` entry of a spec."""

    model_config = ConfigDict(extra="forbid", strict=True)
    scorer: str | None = Field(default=None, min_length=1)
    variant: Literal["partner", "self", "cross"] | None = None
    task: str | None = Field(default=None, min_length=1)
    phase: Literal["before", "after"] | None = None
    comparison: Comparison = "chance"
    condition: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_measure(self) -> PrimaryMeasure:
        if (self.scorer is None) == (self.task is None):
            raise ValueError("give either 'scorer' (a prediction measure) or 'task' (a coordination measure)")
        if self.scorer is not None:
            if self.phase is not None:
                raise ValueError("'phase' belongs to a coordination measure ('task'), not to a scorer")
            if self.comparison == "cross-model":
                raise ValueError("comparison 'cross-model' is for coordination tasks; a scorer compares with "
                                 "'chance', 'control' or 'self'")  # fmt: skip
            if self.comparison == "self" and self.variant not in (None, "partner"):
                raise ValueError("comparison 'self' compares partner predictions with self-predictions")
        else:
            if self.variant is not None:
                raise ValueError("'variant' belongs to a prediction measure ('scorer'), not to a task")
            if self.comparison in ("control", "self"):
                raise ValueError(f"comparison '{self.comparison}' is for scorers; a task compares with "
                                 "'chance' or 'cross-model'")  # fmt: skip
            if self.comparison == "cross-model" and self.condition is not None:
                raise ValueError("the 'cross-model' comparison pools every condition: leave 'condition' out")
        return self

    @property
    def measure(self) -> str:
        return "prediction" if self.scorer is not None else "coordination"

    @property
    def detail(self) -> str:
        if self.scorer is not None:
            return self.variant or "partner"
        return self.phase or "after"

    def matches(self, key: ComparisonKey) -> bool:
        return (
            key.measure == self.measure
            and key.name == (self.scorer or self.task)
            and key.detail == self.detail
            and key.comparison == self.comparison
            and (self.condition is None or key.condition == self.condition)
        )

    def describe(self) -> str:
        """``chrf of partner predictions vs chance, in clone-aware`` (for the report)."""
        where = f", in `{self.condition}`" if self.condition else ", in every condition"
        if self.scorer is not None:
            what = f"`{self.scorer}` of {self.detail} predictions"
            versus = {"chance": "chance", "control": "the control", "self": "self-prediction"}[self.comparison]
        else:
            what = f"coordination on `{self.task}`, {self.detail} the dialogue"
            versus = "chance" if self.comparison == "chance" else "cross-model pairs"
            if self.comparison == "cross-model":
                where = ""
        return f"{what} vs {versus}{where}"


def primary_from_spec(spec_text: str) -> list[PrimaryMeasure]:
    """The primary measures of a stored spec (none if it names none, or cannot be read: the
    spec was validated when the experiment started, so that is an old or foreign spec)."""
    if not spec_text.strip():
        return []
    try:
        raw: Any = tomllib.loads(spec_text).get("primary", [])
        if not isinstance(raw, list):
            return []
        return [PrimaryMeasure.model_validate(entry) for entry in raw]
    except (tomllib.TOMLDecodeError, ValidationError):
        return []
