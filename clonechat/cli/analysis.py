"""``clonechat score`` and ``clonechat report``: measuring stored runs and writing them up.

Both read the database a batch wrote and never touch its turns; ``score`` adds score rows
(idempotently), ``report`` writes Markdown and PNG plots, or one self-contained HTML page.
``report`` scores first (the cheap text scorers and the coordination answers, so it never lacks
figures a plain ``score`` would give), so it opens the database for writing; the report's data
is then read with the scores in force.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
from rich.console import Console
from rich.markup import escape

from clonechat.analysis.load import experiment_id
from clonechat.analysis.publish import FORMATS, ReportFormat, write
from clonechat.errors import ClonechatError, ConfigError
from clonechat.location import DbLocation
from clonechat.prompts import PromptLibrary
from clonechat.providers.base import Provider
from clonechat.registry import ProviderPool, Registry
from clonechat.scoring.model_scorers import (
    JUDGE_NAME,
    SURPRISAL_NAME,
    SURPRISAL_VERSION,
    PredictorContexts,
    judge_scorer,
    judge_version,
    surprisal_scorer,
)
from clonechat.scoring.registry import DEFAULT_SCORERS, TEXT_SCORERS
from clonechat.scoring.runner import ScoringSummary, score_text, score_with_model
from clonechat.scoring.self_knowledge import SelfKnowledgeSummary, score_self_knowledge
from clonechat.scoring.targets import load_targets
from clonechat.store.database import Database

SELF_KNOWLEDGE_NAME = "self_knowledge"
MODEL_SCORERS = (SURPRISAL_NAME, JUDGE_NAME, SELF_KNOWLEDGE_NAME)
DEFAULT_REPORTS_DIR = Path("runs") / "reports"


def scorer_descriptions() -> list[tuple[str, str]]:
    rows = [(s.name, s.description) for s in TEXT_SCORERS.values()]
    rows.append(
        (
            SURPRISAL_NAME,
            "predictor's mean log-probability per token of the actual message (embedded, prompt_logprobs servers)",
        )
    )
    rows.append((JUDGE_NAME, "a judge model rates prediction vs message 0-10 with prompts/judges/ (needs --judge)"))
    rows.append(
        (
            SELF_KNOWLEDGE_NAME,
            "each turn's log-prob under own context, partner's view, another model ([self_knowledge] conditions)",
        )
    )
    return rows


def logprob_providers(registry: Registry, pool: ProviderPool) -> Callable[[str], Provider | None]:
    """A model's provider by registry name if it can score given text (in-process models, and
    servers that return prompt log-probabilities: docs/surprisal.md), else None."""

    def provider_for(model: str) -> Provider | None:
        spec = registry.models.get(model)
        if spec is None or not (spec.provider == "local" or spec.prompt_logprobs is not None):
            return None
        return pool.get(spec)

    return provider_for


def self_knowledge_line(summary: SelfKnowledgeSummary) -> str:
    text = f"{SELF_KNOWLEDGE_NAME}: {summary.new_scores} new score rows for {summary.turns} turns"
    if summary.unavailable:
        missing = ", ".join(f"{model} ({n})" for model, n in sorted(summary.unavailable.items()))
        text += f"; not available for {missing} (they cannot score given text: docs/surprisal.md)"
    return text


async def run_self_knowledge(db: Database, eid: str, registry: Registry) -> SelfKnowledgeSummary:
    """Score the self-knowledge decomposition of every turn not scored yet (its own provider pool)."""
    pool = ProviderPool()
    try:
        return await score_self_knowledge(db, eid, logprob_providers(registry, pool))
    finally:
        with anyio.CancelScope(shield=True):
            await pool.aclose()


def _line(console: Console, name: str, summary: ScoringSummary) -> None:
    text = f"{name}: {summary.new_scores} new score rows for {summary.predictions} predictions"
    if summary.answers:
        text += f"; {summary.answers} coordination answers read"
    if summary.recognitions:
        text += f"; {summary.recognitions} recognition answers scored"
    if summary.skipped:
        text += f", {summary.skipped} already scored"
    if summary.unavailable:
        missing = ", ".join(f"{model} ({n})" for model, n in sorted(summary.unavailable.items()))
        text += f"; not available for {missing}"
    console.print(escape(text))


async def _model_scores(
    db: Database, eid: str, names: list[str], registry: Registry, judge: str, console: Console
) -> None:
    pool = ProviderPool()
    try:
        if SURPRISAL_NAME in names:
            contexts = PredictorContexts(db, eid)
            provider_for = logprob_providers(registry, pool)
            providers = {model: provider_for(model) for model in {t.model for t in load_targets(db, eid)}}
            summary = await score_with_model(
                db, eid, SURPRISAL_NAME, SURPRISAL_VERSION, surprisal_scorer(contexts, providers)
            )
            _line(console, SURPRISAL_NAME, summary)
        if JUDGE_NAME in names:
            provider = pool.get(registry.get(judge))
            rubric = PromptLibrary().get("judges", "default")
            summary = await score_with_model(
                db, eid, JUDGE_NAME, judge_version(provider, rubric), judge_scorer(provider, rubric)
            )
            _line(console, f"{JUDGE_NAME} ({judge})", summary)
        if SELF_KNOWLEDGE_NAME in names:
            knowledge = await score_self_knowledge(db, eid, logprob_providers(registry, pool))
            console.print(escape(self_knowledge_line(knowledge)))
    finally:
        with anyio.CancelScope(shield=True):
            await pool.aclose()


def experiment_registry(db: Database, experiment: str, registry: Registry) -> Registry:
    """``registry`` with the models the experiment's stored spec defines (``[models.NAME]``), so
    a model named only in the spec (a server for a cross-model condition) scores too."""
    from clonechat.batch.spec import parse_spec
    from clonechat.read.experiments import require_experiment

    spec = require_experiment(db, experiment).spec
    if not spec:
        return registry
    try:
        loaded = parse_spec(spec, f"{db.path} [experiment {experiment}]", registry=registry, need_keys=False)
    except ClonechatError:
        return registry  # a spec this version no longer reads: the registry's models only
    return Registry({**registry.models, **loaded.models})


def score_command(
    db_path: DbLocation | str, experiment: str, scorers: list[str], judge: str, registry: Registry
) -> int:
    known = [*TEXT_SCORERS, *MODEL_SCORERS]
    for name in scorers:
        if name not in known:
            raise ConfigError(f"unknown scorer '{name}' (known: {', '.join(known)}; see 'clonechat score --list')")
    names = scorers or [*DEFAULT_SCORERS, SURPRISAL_NAME, SELF_KNOWLEDGE_NAME]
    console = Console(highlight=False, soft_wrap=True)
    with Database.open(db_path, create=False) as db:
        eid = experiment_id(db, experiment)
        text_names = [n for n in names if n in TEXT_SCORERS]
        if text_names:
            _line(console, ", ".join(text_names), score_text(db, eid, text_names))
        model_names = [n for n in names if n in MODEL_SCORERS]
        if model_names:
            models = experiment_registry(db, experiment, registry)
            anyio.run(_model_scores, db, eid, model_names, models, judge, console)
    return 0


def report_command(
    db_path: DbLocation | str,
    experiment: str,
    out: Path | None,
    fmt: str = "markdown",
    compare: str | None = None,
) -> int:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown report format '{fmt}' (known: {', '.join(FORMATS)})")
    if compare == experiment:
        raise ConfigError(f"--compare names the report's own experiment '{experiment}': name another one")
    console = Console(highlight=False, soft_wrap=True)
    with Database.open(db_path, create=False) as db:
        # The cheap scorers first, so a report never lacks figures a plain `score` would give.
        for name in (experiment, *([compare] if compare else [])):
            score_text(db, experiment_id(db, name))
        target = out or DEFAULT_REPORTS_DIR / (f"{experiment}-vs-{compare}" if compare else experiment)
        chosen: ReportFormat = "html" if fmt == "html" else "markdown"
        path = write(db, experiment, target, chosen, compare=compare)
    console.print(f"report written: {escape(str(path))} ({format_size(path.stat().st_size)})")
    return 0


def format_size(size: int) -> str:
    """``812 B``, ``14.2 kB``, ``3.1 MB``."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"
