"""The measurement protocol around a dialogue: predictions, coordination, reports-back,
self-recognition, the researcher's scheduled interjections and the convergence stop.

These are *side channels*: separate requests, built from an agent's own view of the
conversation plus an instruction, whose answers are stored as nodes hanging off the path but
never enter either agent's main context (``agent_view`` skips every kind but openings and
turns). The settings carry rendered instruction text, not template names, so the engine stays
free of the prompt library; ``clonechat.session`` renders them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from clonechat.engine.records import AgentName
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
class RecognitionProtocol:
    """After the dialogue each agent is shown messages of the conversation, without who wrote
    them, one per request, and asked whether it wrote each one or its partner did."""

    #: Renders the question for one shown message (its text only: no speaker, no position).
    question: Callable[[str], str]
    #: Messages shown to each agent: half its own, half its partner's (fewer when the dialogue
    #: is shorter, always balanced, so chance is 0.5).
    items: int = 4
    #: ``dialogue``: asked with the agent's own view of the conversation before the question;
    #: ``none``: with its system prompt only (pure style recognition).
    context: str = "dialogue"
    max_tokens: int = 8


@dataclass(frozen=True)
class Interjection:
    """A researcher's message put on the path before agent turn ``at`` (1-based), seen only
    by the agents it is addressed to."""

    at: int
    #: ``A``, ``B``, or ``None`` for both.
    to: AgentName | None
    text: str


@dataclass(frozen=True)
class ConvergenceRule:
    """Stop (or, with ``stop`` False, only let the report mark) a dialogue once ``metric``
    (a per-turn metric of :mod:`clonechat.engine.metrics`) is at least ``threshold`` for
    ``turns`` agent turns in a row."""

    metric: str
    threshold: float
    turns: int
    stop: bool = True


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
    recognition: RecognitionProtocol | None = None
    interjections: tuple[Interjection, ...] = ()
    convergence: ConvergenceRule | None = None

    @property
    def active(self) -> bool:
        return (
            self.prediction is not None
            or bool(self.coordination)
            or self.report_instruction is not None
            or self.recognition is not None
        )


def side_key(kind: str, speaker: str, variant: str | None) -> str:
    """Identifies a once-per-dialogue side node (a coordination answer, a report-back)."""
    return f"{kind}:{variant or ''}:{speaker}"


def with_instruction(view: list[ChatMessage], instruction: str) -> list[ChatMessage]:
    """An agent's view with a researcher's instruction as the next incoming message (merged into
    a trailing incoming message, as ``agent_view`` does, for templates requiring alternation)."""
    if view and view[-1].role == "user":
        return [*view[:-1], ChatMessage("user", view[-1].content + "\n\n" + instruction)]
    return [*view, ChatMessage("user", instruction)]
