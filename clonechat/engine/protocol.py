"""The measurement protocol around a dialogue: predictions, coordination and reports-back.

These are *side channels*: separate requests, built from an agent's own view of the
conversation plus an instruction, whose answers are stored as nodes hanging off the path but
never enter either agent's main context (``agent_view`` skips every kind but openings and
turns). The settings carry rendered instruction text, not template names, so the engine stays
free of the prompt library; ``clonechat.session`` renders them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from clonechat.providers.base import ChatMessage, Provider

#: Prediction variants: the partner predicts the speaker (the measure), the speaker predicts
#: itself (control: how predictable is the message to anyone with the speaker's view), a
#: different model predicts from the partner's view (control: is it *self*-knowledge).
PARTNER, SELF, CROSS = "partner", "self", "cross"


@dataclass(frozen=True)
class PredictionProtocol:
    #: Instruction appended to the partner's (and the cross predictor's) view.
    partner_instruction: str
    #: Instruction appended to the speaker's own view; ``None`` switches self-prediction off.
    self_instruction: str | None = None
    #: A different model that predicts from the partner's view; ``None`` for none.
    cross_provider: Provider | None = None
    #: The reveal condition: renders the note that shows the speaker its partner's prediction
    #: just before it writes. ``None`` (the default) keeps the speaker blind to it.
    reveal: Callable[[str], str] | None = None


@dataclass(frozen=True)
class CoordinationQuestion:
    task: str
    question: str


@dataclass(frozen=True)
class Protocol:
    """What is measured around the dialogue; the default measures nothing."""

    prediction: PredictionProtocol | None = None
    coordination: tuple[CoordinationQuestion, ...] = ()
    #: When coordination questions are asked: "before" and/or "after" the dialogue.
    coordination_phases: tuple[str, ...] = ("before", "after")
    #: The report-back instruction, asked of each agent once the dialogue completes.
    report_instruction: str | None = None
    #: Side-channel nodes already stored (``side_key``), so a resumed dialogue asks none twice.
    done: frozenset[str] = field(default_factory=frozenset)

    @property
    def active(self) -> bool:
        return self.prediction is not None or bool(self.coordination) or self.report_instruction is not None


def side_key(kind: str, speaker: str, variant: str | None) -> str:
    """Identifies a once-per-dialogue side node (a coordination answer, a report-back)."""
    return f"{kind}:{variant or ''}:{speaker}"


def with_instruction(view: list[ChatMessage], instruction: str) -> list[ChatMessage]:
    """An agent's view with a researcher's instruction as the next incoming message (merged into
    a trailing incoming message, as ``agent_view`` does, for templates requiring alternation)."""
    if view and view[-1].role == "user":
        return [*view[:-1], ChatMessage("user", view[-1].content + "\n\n" + instruction)]
    return [*view, ChatMessage("user", instruction)]
