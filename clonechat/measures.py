"""What a condition measures around its dialogues, from the user's options to the engine's
``Protocol`` and back from the store.

The options name templates (``prompts/predictions``, ``prompts/coordination``,
``prompts/reports``) and models; ``render_measures`` renders every instruction up front, so a
missing template or model fails before anything is written; the rendered prompts are stored
by hash like system prompts, and a dialogue's settings keep those hashes, so a resumed
dialogue asks exactly the questions it was started with.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from clonechat.engine.protocol import CoordinationQuestion, PredictionProtocol, Protocol
from clonechat.errors import ConfigError
from clonechat.prompts import PromptLibrary, RenderedPrompt
from clonechat.providers.base import Provider
from clonechat.registry import ModelSpec, Registry
from clonechat.scoring.coordination import load_task

#: Placeholder left in the stored reveal prompt; the partner's prediction replaces it each turn.
PREDICTION_SLOT = "{prediction}"
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
class MeasureOptions:
    prediction: PredictionOptions | None = None
    coordination: CoordinationOptions | None = None
    report_back: ReportOptions | None = None


@dataclass(frozen=True)
class RenderedMeasures:
    """The options with every instruction rendered and every model resolved."""

    options: MeasureOptions
    prompts: dict[str, RenderedPrompt]
    cross_model: ModelSpec | None = None

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
        return out


def render_measures(
    options: MeasureOptions, values: Mapping[str, object], library: PromptLibrary, registry: Registry
) -> RenderedMeasures:
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
    return RenderedMeasures(options, prompts, cross)


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
            reveal=None if reveal_text is None else _revealer(reveal_text),
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
    protocol = Protocol(prediction, coordination, phases, report, frozenset(done))
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
    return hashes


def _revealer(text: str) -> Callable[[str], str]:
    def reveal(prediction: str) -> str:
        return text.replace(PREDICTION_SLOT, prediction)

    return reveal
