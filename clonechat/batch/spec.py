"""The batch experiment spec: a TOML file, validated with pydantic before anything runs.

A spec names the conditions (a framing template and the model of each agent), how many
replicates of each, how long each dialogue may run, the seed everything is derived from, and
how many dialogues may be in flight at once. Settings at the top level are defaults that a
condition may override::

    name = "smoke"                 # the experiment's name in the database (default: file name)
    replicates = 2
    max_turns = 4
    seed = 1                       # every dialogue's seed derives from this
    concurrency = 2                # dialogues in flight at once
    model_a = "local"

    [params]                       # generation parameters over the models' defaults
    max_tokens = 48

    [[conditions]]
    template = "clone-aware"

    [[conditions]]
    name = "cross"
    template = "clone-aware"
    model_b = "srv"                # a model from models.toml, or from [models.srv] below

    [models.srv]                   # same format as models.toml
    provider = "openai-compatible"
    base_url = "http://127.0.0.1:8080/v1"
    model = "smollm2"

Every error names the file, the line and key where it can, and the reason (``SpecError``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from clonechat.analysis.primary import PrimaryMeasure
from clonechat.batch.toml_lines import Loc, format_loc, line_of
from clonechat.config_errors import describe_error
from clonechat.engine.convergence import CONVERGENCE_METRICS
from clonechat.engine.dialogue import DEFAULT_STOP_PHRASE
from clonechat.engine.records import AgentName
from clonechat.errors import ClonechatError, ConfigError
from clonechat.measures import (
    ConvergenceOptions,
    CoordinationOptions,
    InterjectionOptions,
    MeasureOptions,
    PredictionOptions,
    RecognitionOptions,
    ReportOptions,
    SelfKnowledgeOptions,
)
from clonechat.prompts import PromptLibrary
from clonechat.registry import ModelSpec, Registry, api_key, spec_from_toml
from clonechat.registry_file import ModelsFileError
from clonechat.scoring.model_scorers import JUDGE_NAME, SURPRISAL_NAME
from clonechat.scoring.registry import TEXT_SCORERS
from clonechat.session import DialogueBlueprint, DialogueRequest, blueprint

#: Measures added after specs were first stored: left out of the canonical form when unset.
NEWER_MEASURES = ("recognition", "self_knowledge", "convergence", "interjections")
#: Settings that change how a run goes but not what it produces: changing them in the file
#: does not make it a different experiment.
RUNTIME_KEYS = frozenset({"concurrency", "description", "max_cost", "max_tokens_total"})


class SpecError(ConfigError):
    """A spec file is malformed; the message says where and why."""


Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")]


class Params(BaseModel):
    """Generation parameters; anything left out comes from the model's defaults."""

    model_config = ConfigDict(extra="forbid", strict=True)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=100_000)
    top_p: float | None = Field(default=None, gt=0, le=1)
    repeat_penalty: float | None = Field(default=None, gt=0)

    def overrides(self) -> dict[str, float | int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


Variables = dict[str, str | int | float]
FirstSpeaker = Literal["A", "B", "alternate"]


class PredictionSpec(BaseModel):
    """``[prediction]``: before each message, the partner predicts it (blinded side channel)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    #: Control: the speaker predicts its own message first.
    self_predict: bool = False
    #: Control: a different model predicts from the partner's view.
    cross_model: Name | None = None
    #: Experiment: show the speaker its partner's prediction before it writes.
    reveal: bool = False
    template: Name = "partner"
    self_template: Name = "self"
    reveal_template: Name = "reveal"

    def options(self) -> PredictionOptions:
        return PredictionOptions(**self.model_dump())


class CoordinationSpec(BaseModel):
    """``[coordination]``: Schelling questions both agents answer independently."""

    model_config = ConfigDict(extra="forbid", strict=True)
    tasks: list[Name] = Field(min_length=1)
    when: Literal["before", "after", "both"] = "both"
    max_tokens: int = Field(default=32, ge=1, le=4096)

    def options(self) -> CoordinationOptions:
        return CoordinationOptions(tuple(self.tasks), self.when, self.max_tokens)


class ReportBackSpec(BaseModel):
    """``[report_back]``: each agent writes to the researcher once the dialogue is over."""

    model_config = ConfigDict(extra="forbid", strict=True)
    template: Name = "default"
    max_tokens: int = Field(default=300, ge=1, le=100_000)

    def options(self) -> ReportOptions:
        return ReportOptions(self.template, self.max_tokens)


class RecognitionSpec(BaseModel):
    """``[recognition]``: after the dialogue, each agent is shown messages of it without their
    speaker and asked, per message, whether it wrote it or its partner did."""

    model_config = ConfigDict(extra="forbid", strict=True)
    template: Name = "default"
    #: Messages shown to each agent, half its own and half its partner's (so chance is 0.5).
    items: int = Field(default=4, ge=2, le=1000, multiple_of=2)
    #: ``dialogue``: the agent answers with its own view of the conversation before it;
    #: ``none``: with its system prompt only (style alone).
    context: Literal["dialogue", "none"] = "dialogue"
    max_tokens: int = Field(default=8, ge=1, le=4096)

    def options(self) -> RecognitionOptions:
        return RecognitionOptions(**self.model_dump())


class SelfKnowledgeSpec(BaseModel):
    """``[self_knowledge]``: each turn's log-probability under (a) the speaker's own context,
    (b) the partner's view, (c) a different model given the partner's view (scored after the
    run, by models that can score given text)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    #: The prediction instruction that makes the message the partner's next reply in (b), (c).
    template: Name = "partner"
    cross_model: Name | None = None

    def options(self) -> SelfKnowledgeOptions:
        return SelfKnowledgeOptions(**self.model_dump())


class InterjectionSpec(BaseModel):
    """``[[interjections]]``: a researcher's message (``prompts/interjections/``) put on the
    path before agent turn ``at``, seen only by the agent(s) it is addressed ``to``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    at: int = Field(ge=1, le=10_000)
    template: Name
    to: Literal["A", "B", "both"] = "both"

    def options(self) -> InterjectionOptions:
        return InterjectionOptions(self.at, self.template, self.to)


class ConvergenceSpec(BaseModel):
    """``[convergence]``: stop (or mark) a dialogue once a per-turn metric is at least
    ``threshold`` for ``turns`` agent turns in a row."""

    model_config = ConfigDict(extra="forbid", strict=True)
    metric: Literal[CONVERGENCE_METRICS] = "overlap_partner"  # type: ignore[valid-type]
    threshold: float = Field(default=0.8, ge=0, le=1)
    turns: int = Field(default=3, ge=1, le=10_000)
    action: Literal["stop", "mark"] = "stop"

    def options(self) -> ConvergenceOptions:
        return ConvergenceOptions(self.metric, self.threshold, self.turns, self.action)


class ConditionSpec(BaseModel):
    """One arm of the experiment. Unset keys take the top-level value."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: Name | None = None
    template: Name
    model_a: Name | None = None
    model_b: Name | None = None
    replicates: int | None = Field(default=None, ge=1, le=100_000)
    max_turns: int | None = Field(default=None, ge=1, le=10_000)
    opening: Name | None = None
    stop_phrase: str | None = None
    token_budget: int | None = Field(default=None, ge=1)
    first_speaker: FirstSpeaker | None = None
    params: Params = Field(default_factory=Params)
    variables: Variables = Field(default_factory=dict)
    prediction: PredictionSpec | bool | None = None
    coordination: CoordinationSpec | Literal[False] | None = None
    report_back: ReportBackSpec | bool | None = None
    recognition: RecognitionSpec | bool | None = None
    self_knowledge: SelfKnowledgeSpec | bool | None = None
    convergence: ConvergenceSpec | Literal[False] | None = None
    #: Replaces the top-level list (``[]`` for none).
    interjections: list[InterjectionSpec] | None = None

    @property
    def label(self) -> str:
        return self.name or self.template


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Name
    description: str = ""
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    replicates: int = Field(default=1, ge=1, le=100_000)
    max_turns: int = Field(default=6, ge=1, le=10_000)
    concurrency: int = Field(default=4, ge=1, le=10_000)
    model_a: Name = "local"
    model_b: Name | None = None
    opening: Name = "default"
    stop_phrase: str = DEFAULT_STOP_PHRASE
    token_budget: int | None = Field(default=None, ge=1)
    #: Stop the experiment once it has spent this many US dollars, or used this many tokens
    #: (see clonechat.batch.budget); runtime settings, so raising one resumes the experiment.
    max_cost: float | None = Field(default=None, gt=0)
    max_tokens_total: int | None = Field(default=None, ge=1)
    first_speaker: FirstSpeaker = "alternate"
    params: Params = Field(default_factory=Params)
    variables: Variables = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: The condition the report compares every other condition with.
    control: Name | None = None
    #: The comparisons the experiment is run to test (clonechat.analysis.primary): the report
    #: tests them as planned (Holm) and calls every other comparison exploratory.
    primary: list[PrimaryMeasure] = Field(default_factory=list)
    prediction: PredictionSpec | bool | None = None
    coordination: CoordinationSpec | Literal[False] | None = None
    report_back: ReportBackSpec | bool | None = None
    recognition: RecognitionSpec | bool | None = None
    self_knowledge: SelfKnowledgeSpec | bool | None = None
    convergence: ConvergenceSpec | Literal[False] | None = None
    #: Replaces the top-level list (``[]`` for none).
    interjections: list[InterjectionSpec] | None = None
    conditions: list[ConditionSpec] = Field(min_length=1)

    @field_validator("models", mode="before")
    @classmethod
    def _models_are_tables(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, entry in value.items():
                if not isinstance(entry, dict):
                    raise ValueError(f"[models.{name}] must be a table")
        return value


@dataclass(frozen=True)
class PlannedCondition:
    """One condition with every default applied and its prompts rendered."""

    name: str
    replicates: int
    first_speaker: FirstSpeaker
    blueprint: DialogueBlueprint

    @property
    def max_turns(self) -> int:
        return self.blueprint.request.max_turns


@dataclass(frozen=True)
class PlannedDialogue:
    condition: str
    replicate: int
    seed: int
    first_speaker: AgentName


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec: the file's text (stored with the experiment), the parsed model, and
    every condition resolved against the model registry and the prompt templates."""

    path: str
    text: str
    spec: ExperimentSpec
    conditions: list[PlannedCondition]
    models: dict[str, ModelSpec]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def canonical(self) -> dict[str, Any]:
        """What makes this experiment this experiment: the validated spec minus runtime keys,
        so whitespace, comments or a new concurrency do not count as a change."""
        data = self.spec.model_dump(mode="json")
        for key in RUNTIME_KEYS:
            data.pop(key, None)
        for key in ("primary", *NEWER_MEASURES):
            if not data.get(key):
                data.pop(key, None)  # specs from before the key existed keep their hash
        for condition in data.get("conditions", []):
            for key in NEWER_MEASURES:
                if condition.get(key) is None:
                    condition.pop(key, None)
        return data

    @property
    def canonical_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.canonical, sort_keys=True).encode()).hexdigest()

    def dialogues(self) -> list[PlannedDialogue]:
        """Every dialogue of the experiment, interleaved across conditions (replicate 1 of each
        condition, then replicate 2, ...) so a partial run is balanced across conditions."""
        base_seed = self.spec.seed
        rng = random.Random()
        planned: list[PlannedDialogue] = []
        for replicate in range(1, max(c.replicates for c in self.conditions) + 1):
            for condition in self.conditions:
                if replicate > condition.replicates:
                    continue
                if base_seed is None:
                    seed = rng.randrange(2**31)
                else:
                    digest = hashlib.blake2b(f"{base_seed}:{condition.name}:{replicate}".encode(), digest_size=4)
                    seed = int.from_bytes(digest.digest(), "big") & 0x7FFFFFFF
                first: AgentName
                if condition.first_speaker == "alternate":
                    first = "A" if replicate % 2 == 1 else "B"
                else:
                    first = condition.first_speaker
                planned.append(PlannedDialogue(condition.name, replicate, seed, first))
        return planned


def _known_keys(loc: Loc) -> list[str]:
    """The keys allowed in the table holding ``loc``'s last key, for "did you mean" hints."""
    model: type[BaseModel] = ExperimentSpec
    for part in loc[:-1]:
        if part == "conditions":
            model = ConditionSpec
        elif part == "primary":
            model = PrimaryMeasure
        elif part == "params":
            model = Params
        elif part == "interjections":
            model = InterjectionSpec
        elif isinstance(part, str) and part in _MEASURE_TABLES:
            model = _MEASURE_TABLES[part]
    return sorted(model.model_fields)


_MEASURE_TABLES: dict[str, type[BaseModel]] = {
    "prediction": PredictionSpec,
    "coordination": CoordinationSpec,
    "report_back": ReportBackSpec,
    "recognition": RecognitionSpec,
    "self_knowledge": SelfKnowledgeSpec,
    "convergence": ConvergenceSpec,
}
#: How pydantic names the members of ``Table | bool | None`` unions in an error's location.
_UNION_TAGS = frozenset({*(m.__name__ for m in _MEASURE_TABLES.values()), "bool", "literal[False]", "none"})


def _untagged(errors: list[ErrorDetails]) -> tuple[ErrorDetails, Loc]:
    """The error to report and its location without union-member tags. For a measure's table
    (``PredictionSpec | bool``), the table's own error beats "not a boolean"."""
    first = errors[0]
    for error in errors:
        if any(isinstance(p, str) and p.endswith("Spec") for p in error["loc"]) and error["type"] not in (
            "model_type",
            "dict_type",
        ):
            first = error
            break
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
    return first, loc


class _Where:
    """Builds "file:line: key: reason" messages for one spec file."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text

    def error(self, loc: Loc, reason: str, *, shown: Loc | None = None) -> SpecError:
        line = line_of(self.text, loc) if loc else None
        place = f"{self.path}:{line}" if line else self.path
        shown = loc if shown is None else shown
        key = f" {format_loc(shown)}:" if shown else ""
        return SpecError(f"{place}:{key} {reason}")


def _validation_error(where: _Where, exc: ValidationError) -> SpecError:
    errors = exc.errors()
    first, loc = _untagged(errors)
    if first["type"] in ("model_type", "dict_type") and loc and loc[-1] in _MEASURE_TABLES:
        reason = "must be a table, or false to switch it off" + (
            " (coordination needs its tasks)"
            if loc[-1] == "coordination"
            else ""
            if loc[-1] == "convergence"
            else ", or true for its defaults"
        )
        return where.error(loc, reason)
    reason = describe_error(first, _known_keys(loc))
    # Union members repeat one problem once per member: count the distinct locations.
    others = {tuple(p for p in e["loc"] if not (isinstance(p, str) and p in _UNION_TAGS)) for e in errors}
    others = {other for other in others if other != loc[: len(other)]}
    more = f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})" if others else ""
    # For a key that is missing or unknown, name the table it is missing from or unknown in.
    shown = loc[:-1] if first["type"] in ("missing", "extra_forbidden") else loc
    return where.error(loc, reason + more, shown=shown)


def _measures(spec: ExperimentSpec, condition: ConditionSpec) -> MeasureOptions:
    """The condition's measures: its own tables, else the top-level ones (``false`` turns one off)."""

    def pick(own: object, top: object) -> object:
        chosen = top if own is None else own
        return None if chosen is None or chosen is False else chosen

    prediction = pick(condition.prediction, spec.prediction)
    coordination = pick(condition.coordination, spec.coordination)
    report = pick(condition.report_back, spec.report_back)
    recognition = pick(condition.recognition, spec.recognition)
    knowledge = pick(condition.self_knowledge, spec.self_knowledge)
    interjections = spec.interjections if condition.interjections is None else condition.interjections
    return MeasureOptions(
        prediction=PredictionSpec().options() if prediction is True else _options(prediction),
        coordination=_options(coordination),
        report_back=ReportBackSpec().options() if report is True else _options(report),
        recognition=RecognitionSpec().options() if recognition is True else _options(recognition),
        self_knowledge=SelfKnowledgeSpec().options() if knowledge is True else _options(knowledge),
        interjections=tuple(i.options() for i in interjections or ()),
        convergence=_options(pick(condition.convergence, spec.convergence)),
    )


def _options(table: object) -> Any:
    if isinstance(table, PredictionSpec | CoordinationSpec | ReportBackSpec | RecognitionSpec):
        return table.options()
    if isinstance(table, SelfKnowledgeSpec | ConvergenceSpec):
        return table.options()
    return None


def _culprit(here: Loc, condition: ConditionSpec, message: str, measures: MeasureOptions) -> Loc:
    """The key a template error is most likely about, for the error's line number."""
    for number, interjection in enumerate(measures.interjections):
        if f"unknown interjection '{interjection.template}'" in message:
            listed: Loc = (*here, "interjections") if condition.interjections is not None else ("interjections",)
            return (*listed, number, "template")
    # Self-knowledge's instruction is a prediction template: the culprit unless [prediction]
    # renders a template of that name too (it is rendered first).
    knowledge, p = measures.self_knowledge, measures.prediction
    if knowledge is not None and f"unknown prediction '{knowledge.template}'" in message:
        predicted = (
            [] if p is None else [p.template] + [p.self_template] * p.self_predict + [p.reveal_template] * p.reveal
        )
        if knowledge.template not in predicted:
            table: Loc = (*here, "self_knowledge") if condition.self_knowledge is not None else ("self_knowledge",)
            return (*table, "template")
    for key in ("prediction", "coordination", "report_back", "recognition", "self_knowledge", "interjections"):
        if key in message or key.split("_")[0] in message:
            return (*here, key) if getattr(condition, key) is not None else (key,)
    if "thinking" in message:  # a generation parameter the model's thinking rules refuse
        return (*here, "params") if condition.params.overrides() else ("params",)
    return (*here, "variables")


def _resolve(where: _Where, spec: ExperimentSpec, registry: Registry, library: PromptLibrary) -> list[PlannedCondition]:
    planned: list[PlannedCondition] = []
    seen: dict[str, int] = {}
    for index, condition in enumerate(spec.conditions):
        here: Loc = ("conditions", index)
        if condition.label in seen:
            raise where.error(
                (*here, "name") if condition.name else (*here, "template"),
                f"conditions[{seen[condition.label] + 1}] is also named '{condition.label}': "
                "give each condition a distinct 'name'",
            )
        seen[condition.label] = index
        model_a = condition.model_a or spec.model_a
        model_b = condition.model_b or (spec.model_b if condition.model_a is None else None) or model_a
        for key, name in (("model_a", model_a), ("model_b", model_b)):
            if name not in registry.models:
                source = (*here, key) if getattr(condition, key) else (key,)
                known = ", ".join(sorted(registry.models))
                raise where.error(source, f"unknown model '{name}' (known: {known}; define it under [models.{name}])")
        for key, kind in (("template", "conditions"), ("opening", "openings")):
            name = getattr(condition, key) or getattr(spec, key)
            if name not in library.names(kind):
                source = (*here, key) if getattr(condition, key) else (key,)
                known = ", ".join(library.names(kind))
                raise where.error(source, f"unknown {kind[:-1]} template '{name}' (known: {known})")
        params = {**spec.params.overrides(), **condition.params.overrides()}
        measures = _measures(spec, condition)
        for table in ("prediction", "self_knowledge"):
            chosen = getattr(measures, table)
            cross = chosen.cross_model if chosen is not None else None
            if cross is not None and cross not in registry.models:
                where_cross: Loc = (*here, table) if getattr(condition, table) is not None else (table,)
                known = ", ".join(sorted(registry.models))
                raise where.error((*where_cross, "cross_model"), f"unknown model '{cross}' (known: {known})")
        max_turns = condition.max_turns or spec.max_turns
        for number, interjection in enumerate(measures.interjections):
            if interjection.at > max_turns:
                listed: Loc = (*here, "interjections") if condition.interjections is not None else ("interjections",)
                raise where.error(
                    (*listed, number, "at"),
                    f"turn {interjection.at} is past max_turns ({max_turns}): the interjection would never be made",
                )
        request = DialogueRequest(
            condition=condition.template,
            model_a=model_a,
            model_b=model_b,
            max_turns=max_turns,
            stop_phrase=spec.stop_phrase if condition.stop_phrase is None else condition.stop_phrase,
            token_budget=condition.token_budget or spec.token_budget,
            opening=condition.opening or spec.opening,
            experiment=spec.name,
            variables={**spec.variables, **condition.variables},
            params=params,
            condition_name=condition.label,
            measures=measures,
        )
        try:
            plan = blueprint(request, library, registry)
        except ClonechatError as exc:
            raise where.error(_culprit(here, condition, str(exc), measures), str(exc)) from None
        planned.append(
            PlannedCondition(
                condition.label,
                condition.replicates or spec.replicates,
                condition.first_speaker or spec.first_speaker,
                plan,
            )
        )
    return planned


def _check_analysis(where: _Where, spec: ExperimentSpec, conditions: list[PlannedCondition]) -> None:
    """``control`` names a condition, and each primary measure names things the experiment
    measures: a report would otherwise silently test nothing."""
    names = [c.name for c in conditions]
    if spec.control is not None and spec.control not in names:
        raise where.error(("control",), f"no condition is named '{spec.control}' (conditions: {', '.join(names)})")
    measures = {c.name: c.blueprint.request.measures for c in conditions}
    for index, entry in enumerate(spec.primary):
        here: Loc = ("primary", index)
        if entry.condition is not None and entry.condition not in names:
            known = ", ".join(names)
            raise where.error((*here, "condition"), f"no condition is named '{entry.condition}' (conditions: {known})")
        scope = [entry.condition] if entry.condition else names
        if entry.comparison == "control":
            if spec.control is None:
                raise where.error((*here, "comparison"), "comparison 'control' needs a top-level 'control' condition")
            if entry.condition == spec.control:
                raise where.error(
                    (*here, "condition"), f"'{spec.control}' is the control: it is not compared with itself"
                )
        if entry.scorer is not None:
            _check_primary_prediction(where, here, entry, [measures[c] for c in scope])
        else:
            tasks = sorted({t for c in scope if (o := measures[c].coordination) is not None for t in o.tasks})
            if entry.task not in tasks:
                asked = (
                    f"tasks asked: {', '.join(tasks)}" if tasks else "no condition in scope asks coordination questions"
                )
                raise where.error((*here, "task"), f"task '{entry.task}' is not asked ({asked})")


def _check_primary_prediction(where: _Where, here: Loc, entry: PrimaryMeasure, scope: list[MeasureOptions]) -> None:
    known = [*TEXT_SCORERS, SURPRISAL_NAME, JUDGE_NAME]
    if entry.scorer not in known:
        raise where.error((*here, "scorer"), f"unknown scorer '{entry.scorer}' (known: {', '.join(known)})")
    predicting = [m.prediction for m in scope if m.prediction is not None]
    if not predicting:
        raise where.error((*here, "scorer"), "no condition in scope makes predictions (turn [prediction] on)")
    variant = entry.detail
    if (variant == "self" or entry.comparison == "self") and not any(p.self_predict for p in predicting):
        raise where.error(here, "no condition in scope makes self-predictions (set prediction.self_predict)")
    if variant == "cross" and not any(p.cross_model for p in predicting):
        raise where.error(
            (*here, "variant"), "no condition in scope has a cross-model predictor (prediction.cross_model)"
        )


def parse_spec(
    text: str,
    path: str,
    *,
    registry: Registry,
    library: PromptLibrary | None = None,
    default_name: str | None = None,
    need_keys: bool = True,
) -> LoadedSpec:
    """Validate spec ``text`` (read from ``path``) completely: syntax, keys, types, ranges,
    model names, templates, prompt variables and (unless ``need_keys`` is False, for a dry run
    that calls no model) the API keys. Raises ``SpecError``; touches nothing."""
    where = _Where(path, text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        place = f"{path}:{found.group(1)}" if found else path
        raise SpecError(f"{place}: not valid TOML: {exc}") from None
    if default_name and "name" not in raw:
        raw["name"] = default_name
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as exc:
        raise _validation_error(where, exc) from None
    models = dict(registry.models)
    for name, entry in spec.models.items():
        try:
            models[name] = spec_from_toml(name, entry, Path(path))
        except ModelsFileError as exc:
            # The registry's own error knows the key (``exc.loc``): point at its line in the spec.
            raise where.error(exc.loc, exc.reason, shown=("models", name)) from None
    library = library or PromptLibrary()
    conditions = _resolve(where, spec, Registry(models), library)
    _check_analysis(where, spec, conditions)
    for condition in conditions if need_keys else []:
        for model in (condition.blueprint.spec_a, condition.blueprint.spec_b):
            # A missing key is a problem to report now, not a failure after the plan is stored.
            try:
                api_key(model)
            except ConfigError as exc:
                raise where.error(("models", model.name, "api_key_env"), str(exc)) from None
    return LoadedSpec(path, text, spec, conditions, models)


def load_spec_file(
    path: Path, *, registry: Registry, library: PromptLibrary | None = None, need_keys: bool = True
) -> LoadedSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {path}: {exc}") from None
    return parse_spec(text, str(path), registry=registry, library=library, default_name=path.stem, need_keys=need_keys)
