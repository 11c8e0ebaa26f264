"""What a condition measures around its dialogues, from the user's options to the engine's
``Protocol`` and back from the store.

The options name templates (``prompts/predictions``, ``prompts/coordination``,
``prompts/reports``, ``prompts/recognition``, ``prompts/interjections``) and models;
``render_measures`` renders every instruction up front, so a missing template or model fails
before anything is written; the rendered prompts are stored by hash like system prompts, and a
dialogue's settings keep those hashes, so a resumed dialogue asks exactly the questions it was
started with.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from clonechat.engine.protocol import (
    ConvergenceRule,
    CoordinationQuestion,
    Interjection,
    PredictionProtocol,
    Protocol,
    RecognitionProtocol,
)
from clonechat.errors import ConfigError
from clonechat.prompts import PromptLibrary, RenderedPrompt
from clonechat.providers.base import Provider
from clonechat.registry import ModelSpec, Registry
from clonechat.scoring.coordination import load_task

#: Placeholder left in the stored reveal prompt; the partner's prediction replaces it each turn.
PREDICTION_SLOT = "{prediction}"
#: Placeholder left in the stored recognition question; each shown message replaces it.
RECOGNITION_SLOT = "{message}"
COORDINATION_WHEN = {"before": ("before",), "after": ("after",), "both": ("before", "after")}


@dataclass(frozen=True)
class PredictionOptions:
    """The partner predicts each message before it is written (always, when prediction is on);
    the controls are optional."""

    self_predict: bool = False
    cross_model: str | None = None
    reveal: bool = False
    template: str = "partner"
    self_template: str = "self"
    reveal_template: str = "reveal"


@dataclass(frozen=True)
class CoordinationOptions:
    tasks: tuple[str, ...]
    when: str = "both"
    max_tokens: int = 32


@dataclass(frozen=True)
class ReportOptions:
    template: str = "default"
    max_tokens: int = 300


@dataclass(frozen=True)
class RecognitionOptions:
    """Self-recognition: after the dialogue, is this message yours or your partner's?"""

    template: str = "default"
    items: int = 4
    context: str = "dialogue"
    max_tokens: int = 8


@dataclass(frozen=True)
class SelfKnowledgeOptions:
    """Privileged self-knowledge by surprisal (scored after the run): the prediction
    instruction the partner's view is scored with, and the different model of (c)."""

    template: str = "partner"
    cross_model: str | None = None


@dataclass(frozen=True)
class InterjectionOptions:
    at: int
    template: str
    #: ``A``, ``B`` or ``both``.
    to: str = "both"


@dataclass(frozen=True)
class ConvergenceOptions:
    metric: str = "overlap_partner"
    threshold: float = 0.8
    turns: int = 3
    #: ``stop`` ends the dialogue (reason ``converged``); ``mark`` lets it run on and the
    #: report marks the turn.
    action: str = "stop"


@dataclass(frozen=True)
class MeasureOptions:
    prediction: PredictionOptions | None = None
    coordination: CoordinationOptions | None = None
    report_back: ReportOptions | None = None
    recognition: RecognitionOptions | None = None
    self_knowledge: SelfKnowledgeOptions | None = None
    interjections: tuple[InterjectionOptions, ...] = ()
    convergence: ConvergenceOptions | None = None


@dataclass(frozen=True)
class RenderedMeasures:
    """The options with every instruction rendered and every model resolved."""

    options: MeasureOptions
    prompts: dict[str, RenderedPrompt]
    cross_model: ModelSpec | None = None
    #: The different model of the self-knowledge decomposition's (c).
    self_knowledge_model: ModelSpec | None = None

    def settings(self) -> dict[str, Any]:
        """What a dialogue's ``settings`` keep to rebuild the protocol: prompt hashes, names."""
        o = self.options
        out: dict[str, Any] = {}
        if o.prediction is not None:
            out["prediction"] = {
                "partner": self.prompts["prediction.partner"].hash,
                "self": self.prompts["prediction.self"].hash if o.prediction.self_predict else None,
                "cross_model": o.prediction.cross_model,
                "reveal": self.prompts["prediction.reveal"].hash if o.prediction.reveal else None,
            }
        if o.coordination is not None:
            out["coordination"] = {
                "tasks": [[task, self.prompts[f"coordination.{task}"].hash] for task in o.coordination.tasks],
                "phases": list(COORDINATION_WHEN[o.coordination.when]),
                "max_tokens": o.coordination.max_tokens,
            }
        if o.report_back is not None:
            out["report"] = {"instruction": self.prompts["report"].hash, "max_tokens": o.report_back.max_tokens}
        if (r := o.recognition) is not None:
            out["recognition"] = {
                "template": r.template,
                "question": self.prompts["recognition"].hash,
                "items": r.items,
                "context": r.context,
                "max_tokens": r.max_tokens,
            }
        if (k := o.self_knowledge) is not None:
            out["self_knowledge"] = {"instruction": self.prompts["self_knowledge"].hash, "cross_model": k.cross_model}
        if o.interjections:
            # Rendered for each agent it reaches (its own model name, its partner's).
            out["interjections"] = [
                {
                    "at": i.at,
                    "to": i.to,
                    "texts": {a: self.prompts[f"interjection.{n}.{a}"].hash for a in _addressees(i.to)},
                }
                for n, i in enumerate(o.interjections)
            ]
        if (c := o.convergence) is not None:
            out["convergence"] = {"metric": c.metric, "threshold": c.threshold, "turns": c.turns, "action": c.action}
        return out


def _addressees(to: str) -> tuple[str, ...]:
    return ("A", "B") if to == "both" else (to,)


def render_measures(
    options: MeasureOptions,
    values: Mapping[str, object],
    library: PromptLibrary,
    registry: Registry,
    values_b: Mapping[str, object] | None = None,
) -> RenderedMeasures:
    """``values`` fill the templates (agent A's, as the shared instructions are); an
    interjection is rendered with the values of each agent it is addressed to (``values_b`` for
    B's; A's if not given)."""
    prompts: dict[str, RenderedPrompt] = {}
    cross: ModelSpec | None = None
    if (p := options.prediction) is not None:
        prompts["prediction.partner"] = library.get("predictions", p.template).render(values)
        if p.self_predict:
            prompts["prediction.self"] = library.get("predictions", p.self_template).render(values)
        if p.reveal:
            prompts["prediction.reveal"] = library.get("predictions", p.reveal_template).render(
                {**values, "prediction": PREDICTION_SLOT}
            )
        if p.cross_model is not None:
            cross = registry.get(p.cross_model)
    if (c := options.coordination) is not None:
        if c.when not in COORDINATION_WHEN:
            raise ConfigError(f"coordination 'when' must be before, after or both (got {c.when!r})")
        if not c.tasks:
            raise ConfigError("coordination needs at least one task")
        for task in c.tasks:
            prompts[f"coordination.{task}"] = load_task(library, task).template.render(values)
    if (r := options.report_back) is not None:
        prompts["report"] = library.get("reports", r.template).render(values)
    if (g := options.recognition) is not None:
        prompts["recognition"] = library.get("recognition", g.template).render({**values, "message": RECOGNITION_SLOT})
    known: ModelSpec | None = None
    if (k := options.self_knowledge) is not None:
        prompts["self_knowledge"] = library.get("predictions", k.template).render(values)
        if k.cross_model is not None:
            known = registry.get(k.cross_model)
    for n, interjection in enumerate(options.interjections):
        template = library.get("interjections", interjection.template)
        for agent in _addressees(interjection.to):
            own = values if agent == "A" or values_b is None else values_b
            prompts[f"interjection.{n}.{agent}"] = template.render(own)
    return RenderedMeasures(options, prompts, cross, known)


def build_protocol(
    settings: Mapping[str, Any],
    prompts: Mapping[str, str],
    provider_for: Callable[[str], Provider],
    done: Collection[str] = (),
) -> tuple[Protocol, int, int]:
    """The engine protocol for a dialogue's stored ``settings["measures"]`` (``prompts`` maps
    hashes to text, ``provider_for`` gives a model's provider by name); also the coordination
    and report token limits."""
    prediction: PredictionProtocol | None = None
    if (p := settings.get("prediction")) is not None:
        reveal_text = prompts[p["reveal"]] if p.get("reveal") else None
        prediction = PredictionProtocol(
            partner_instruction=prompts[p["partner"]],
            self_instruction=prompts[p["self"]] if p.get("self") else None,
            cross_provider=provider_for(p["cross_model"]) if p.get("cross_model") else None,
            reveal=None if reveal_text is None else _filler(reveal_text, PREDICTION_SLOT),
        )
    coordination: tuple[CoordinationQuestion, ...] = ()
    phases: tuple[str, ...] = ()
    coordination_tokens = 32
    if (c := settings.get("coordination")) is not None:
        coordination = tuple(CoordinationQuestion(task, prompts[h]) for task, h in c["tasks"])
        phases = tuple(c["phases"])
        coordination_tokens = int(c["max_tokens"])
    report: str | None = None
    report_tokens = 300
    if (r := settings.get("report")) is not None:
        report = prompts[r["instruction"]]
        report_tokens = int(r["max_tokens"])
    recognition: RecognitionProtocol | None = None
    if (g := settings.get("recognition")) is not None:
        recognition = RecognitionProtocol(
            _filler(prompts[g["question"]], RECOGNITION_SLOT), int(g["items"]), str(g["context"]), int(g["max_tokens"])
        )
    interjections = tuple(
        interjection for i in settings.get("interjections", ()) for interjection in _interjections(i, prompts)
    )
    convergence: ConvergenceRule | None = None
    if (c := settings.get("convergence")) is not None:
        convergence = ConvergenceRule(c["metric"], float(c["threshold"]), int(c["turns"]), c["action"] == "stop")
    protocol = Protocol(
        prediction, coordination, phases, report, frozenset(done), recognition, interjections, convergence
    )
    return protocol, coordination_tokens, report_tokens


def prompt_hashes(settings: Mapping[str, Any]) -> set[str]:
    """Every prompt hash a dialogue's measures refer to (to load their text in one query)."""
    hashes: set[str] = set()
    if (p := settings.get("prediction")) is not None:
        hashes |= {h for h in (p.get("partner"), p.get("self"), p.get("reveal")) if h}
    if (c := settings.get("coordination")) is not None:
        hashes |= {h for _task, h in c["tasks"]}
    if (r := settings.get("report")) is not None:
        hashes.add(r["instruction"])
    if (g := settings.get("recognition")) is not None:
        hashes.add(g["question"])
    if (k := settings.get("self_knowledge")) is not None:
        hashes.add(k["instruction"])
    hashes |= {h for i in settings.get("interjections", ()) for h in i["texts"].values()}
    return hashes


def _interjections(stored: Mapping[str, Any], prompts: Mapping[str, str]) -> list[Interjection]:
    """One stored interjection as the engine places it: one node seen by both agents when its
    text is the same for both (a clone pair), else one node per addressee, each with its text."""
    texts = {agent: prompts[h] for agent, h in stored["texts"].items()}
    at = int(stored["at"])
    if stored["to"] == "both" and texts["A"] == texts["B"]:
        return [Interjection(at, None, texts["A"])]
    return [Interjection(at, "A" if agent == "A" else "B", text) for agent, text in sorted(texts.items())]


def _filler(text: str, slot: str) -> Callable[[str], str]:
    """Fills ``slot`` in a stored prompt with each turn's text (a prediction, a shown message)."""

    def fill(value: str) -> str:
        return text.replace(slot, value)

    return fill
