"""Where a report's data came from, so a reader can reproduce it: the clonechat that ran it (its
version, and its git commit when it ran from a checkout), the models and their parameters per
condition, the seeds, the hashes of every prompt, when it ran, and the spec.

A report is shared beyond the machine that wrote it, so this section says nothing about that
machine: no file path (not even the checkout's), no server address, no environment variable and
no API key's name. The spec is shown with such values replaced (:func:`redacted_spec`); prompt
hashes are cut to 12 hex characters, enough to find the text in the ``prompt`` table.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from clonechat.analysis.document import Code, Paragraph, Section, Table
from clonechat.analysis.load import stored_spec_value
from clonechat.read.connect import Readable, snapshot
from clonechat.read.experiments import require_experiment
from clonechat.read.transcripts import (
    ConditionSettings,
    DialogueSetupRow,
    RecordedModel,
    condition_settings,
    dialogue_setup_rows,
    node_time_range,
    recorded_models,
)
from clonechat.redaction import ADDRESS, PATH

#: Hex characters of a prompt hash shown.
HASH_CHARS = 12
NOT_A_CHECKOUT = "not a git checkout"
#: Seconds a git command may take before the commit is reported as unknown.
GIT_TIMEOUT = 5.0
#: Spec keys whose values describe the machine or its secrets, not the experiment.
PRIVATE_KEYS = ("base_url", "api_key_env", "api_key", "chat_template", "models_file")
_PRIVATE_VALUE = re.compile(
    r"(?P<key>\b(?:" + "|".join(PRIVATE_KEYS) + r")\s*=\s*)(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|[^\s,}#]+)"
)
_HIDDEN = '"(not shown)"'


@dataclass(frozen=True)
class AgentModel:
    """One agent's model in a condition: as planned, with the parameters it ran with, and the
    model names its nodes recorded (what the provider called itself)."""

    agent: str
    model: str
    #: Each distinct parameter set its dialogues ran with, as ``name=value, ...``.
    params: tuple[str, ...]
    recorded: tuple[str, ...]


@dataclass(frozen=True)
class ConditionProvenance:
    name: str
    template: str
    agents: tuple[AgentModel, ...]
    #: Other things the condition's settings fix (opening, max turns, variables), as text.
    settings: tuple[str, ...]
    #: Prompt hashes (12 hex characters) by role: system A, system B, opening, measures.
    prompts: tuple[tuple[str, tuple[str, ...]], ...]
    #: (replicate, seed) of every dialogue.
    seeds: tuple[tuple[int, int | None], ...]


@dataclass(frozen=True)
class Provenance:
    experiment: str
    clonechat_version: str
    #: The checkout's commit (with a note if it had uncommitted changes), or "not a git checkout".
    git_commit: str
    #: The spec's ``seed`` (None: not set, or not a batch experiment).
    experiment_seed: int | None
    conditions: tuple[ConditionProvenance, ...]
    first_stored: datetime | None
    last_stored: datetime | None
    #: The spec as TOML with private values replaced; "" if none was stored.
    spec: str


# -- the running clonechat -----------------------------------------------------------------------


def clonechat_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clonechat")
    except PackageNotFoundError:
        return "unknown"


def _git(directory: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    try:
        return subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=GIT_TIMEOUT, env=env, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(directory: Path | None = None) -> str:
    """The commit of the checkout the clonechat package runs from, if it is one: its files
    must be tracked there (an installed copy inside some other repository's virtualenv is not
    that repository's code). ``(with uncommitted changes)`` is added when tracked files differ."""
    where = directory or Path(__file__).resolve().parent.parent
    head = _git(where, "rev-parse", "--verify", "HEAD")
    if head is None or head.returncode != 0:
        return NOT_A_CHECKOUT
    tracked = _git(where, "ls-files", "--error-unmatch", "--", "__init__.py")
    if tracked is None or tracked.returncode != 0:
        return NOT_A_CHECKOUT
    commit = head.stdout.strip()
    status = _git(where, "status", "--porcelain", "--untracked-files=no")
    if status is not None and status.returncode == 0 and status.stdout.strip():
        return f"{commit} (with uncommitted changes)"
    return commit


# -- what was stored -----------------------------------------------------------------------------


def redacted_spec(text: str) -> str:
    """The spec with what describes the machine replaced by ``"(not shown)"``: server
    addresses, API key variables, file paths (keys in :data:`PRIVATE_KEYS`, then any address or
    absolute path left, comments included). Everything else, comments too, stays as written."""
    text = _PRIVATE_VALUE.sub(lambda m: m.group("key") + _HIDDEN, text)
    text = ADDRESS.sub("(address not shown)", text)
    return PATH.sub("(path not shown)", text)


def _spec_seed(spec: str | None) -> int | None:
    value = stored_spec_value(spec, "seed")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _params_text(params: object) -> str:
    if not isinstance(params, Mapping) or not params:
        return "model defaults"
    return ", ".join(f"{k}={_value(v)}" for k, v in sorted(params.items()))


def _value(value: object) -> str:
    text = value if isinstance(value, str) else repr(value) if not isinstance(value, (int, float)) else str(value)
    return redacted_spec(text)


def _distinct(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _hashes(values: Iterable[str]) -> tuple[str, ...]:
    return _distinct(v[:HASH_CHARS] for v in values if v)


def _measure_hashes(settings: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """The measures' instruction prompts a condition's settings name, by role."""
    measures = settings.get("measures")
    if not isinstance(measures, Mapping):
        return []
    out: list[tuple[str, tuple[str, ...]]] = []
    prediction = measures.get("prediction")
    if isinstance(prediction, Mapping):
        for variant in ("partner", "self", "cross"):
            if isinstance(prediction.get(variant), str):
                out.append((f"prediction ({variant})", _hashes([prediction[variant]])))
    coordination = measures.get("coordination")
    if isinstance(coordination, Mapping):
        for task in coordination.get("tasks") or []:
            if isinstance(task, Sequence) and len(task) == 2 and isinstance(task[1], str):
                out.append((f"coordination ({task[0]})", _hashes([task[1]])))
    report = measures.get("report")
    if isinstance(report, Mapping) and isinstance(report.get("instruction"), str):
        out.append(("report back", _hashes([report["instruction"]])))
    for key, role, field in (
        ("recognition", "recognition", "question"),
        ("self_knowledge", "self-knowledge", "instruction"),
    ):
        table = measures.get(key)
        if isinstance(table, Mapping) and isinstance(table.get(field), str):
            out.append((role, _hashes([table[field]])))
    for interjection in measures.get("interjections") or []:
        if isinstance(interjection, Mapping) and isinstance(texts := interjection.get("texts"), Mapping):
            at, to = interjection.get("at"), interjection.get("to")
            out.append((f"interjection (turn {at}, to {to})", _hashes(str(h) for h in texts.values())))
    return out


def _settings_lines(settings: Mapping[str, Any]) -> tuple[str, ...]:
    lines = []
    if isinstance(settings.get("opening"), str):
        lines.append(f"opening template {settings['opening']}")
    if isinstance(settings.get("max_turns"), int):
        lines.append(f"max turns {settings['max_turns']}")
    variables = settings.get("variables")
    if isinstance(variables, Mapping) and variables:
        lines.append("variables " + ", ".join(f"{k}={_value(v)}" for k, v in sorted(variables.items())))
    return tuple(lines)


def _recorded(rows: Sequence[RecordedModel], condition: str, speaker: str) -> tuple[str, ...]:
    """The model names the agent's turns recorded, with counts ("scripted (4 turns)")."""
    return tuple(
        f"{r.model} ({r.nodes} turn{'' if r.nodes == 1 else 's'})"
        for r in rows
        if r.condition == condition and r.speaker == speaker and r.kind == "turn"
    )


def _cross_predictors(rows: Sequence[RecordedModel], condition: str) -> tuple[str, ...]:
    return _distinct(
        r.model for r in rows if r.condition == condition and r.kind == "prediction" and r.variant == "cross"
    )


def _condition(
    condition: ConditionSettings, dialogues: Sequence[DialogueSetupRow], models: Sequence[RecordedModel]
) -> ConditionProvenance:
    own = [d for d in dialogues if d.condition == condition.name]
    agents = []
    for agent, model in (("A", condition.model_a), ("B", condition.model_b)):
        key = f"params_{agent.lower()}"
        stored = [d.settings.get(key) for d in own if key in d.settings] or [condition.settings.get(key)]
        agents.append(
            AgentModel(agent, model, _distinct(map(_params_text, stored)), _recorded(models, condition.name, agent))
        )
    for cross in _cross_predictors(models, condition.name):
        agents.append(AgentModel("cross predictor", cross, (), ()))
    prompts = [
        ("system A", _hashes(d.system_prompt_a for d in own)),
        ("system B", _hashes(d.system_prompt_b for d in own)),
        ("opening", _hashes(d.opening_prompt for d in own)),
        *_measure_hashes(condition.settings),
    ]
    return ConditionProvenance(
        name=condition.name,
        template=condition.template,
        agents=tuple(agents),
        settings=_settings_lines(condition.settings),
        prompts=tuple(prompts),
        seeds=tuple((d.replicate, d.seed) for d in own),
    )


def load_provenance(db: Readable, experiment: str) -> Provenance:
    """The provenance of the experiment called ``experiment`` (a NotFoundError naming the known
    ones if none), read at one moment."""
    with snapshot(db) as moment:
        found = require_experiment(moment, experiment)
        conditions = condition_settings(moment, found.id)
        dialogues = dialogue_setup_rows(moment, found.id)
        models = recorded_models(moment, found.id)
        times = node_time_range(moment, found.id)
    return Provenance(
        experiment=found.name,
        clonechat_version=clonechat_version(),
        git_commit=git_commit(),
        experiment_seed=_spec_seed(found.spec),
        conditions=tuple(_condition(c, dialogues, models) for c in conditions),
        first_stored=times[0] if times else None,
        last_stored=times[1] if times else None,
        spec=redacted_spec(found.spec) if found.spec else "",
    )


# -- as document blocks --------------------------------------------------------------------------


def compact_seeds(seeds: Sequence[tuple[int, int | None]]) -> str:
    """``1–3: 7–9`` when consecutive replicates have consecutive seeds, else ``1: 840182532,
    2: 20389298, ...`` (every seed: a reader reruns one dialogue from it)."""
    known = sorted((r, s) for r, s in seeds if s is not None)
    missing = len(seeds) - len(known)
    if not known:
        return "not recorded"
    first_r, first_s = known[0]
    last_r, last_s = known[-1]
    runs = all(r - first_r == s - first_s for r, s in known) and len(known) == last_r - first_r + 1
    if runs and len(known) > 2:
        text = f"replicates {first_r}–{last_r}: seeds {first_s}–{last_s}"
    else:
        text = ", ".join(f"{r}: {s}" for r, s in known)
    return text + (f" ({missing} without a seed)" if missing else "")


def _when(p: Provenance) -> str:
    if p.first_stored is None or p.last_stored is None:
        return "nothing stored yet"
    seconds = int((p.last_stored - p.first_stored).total_seconds())
    hours, rest = divmod(seconds, 3600)
    span = f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s" if rest >= 60 else f"{rest} s"
    return f"{p.first_stored:%Y-%m-%d %H:%M:%S} to {p.last_stored:%Y-%m-%d %H:%M:%S} UTC ({span})"


def _commit_cell(commit: str) -> str:
    if commit == NOT_A_CHECKOUT:
        return commit
    sha, _, note = commit.partition(" ")
    return f"`{sha}`" + (f" {note}" if note else "")


def provenance_section(p: Provenance) -> Section:
    """The provenance as the report's *Reproducibility* section: facts, models, prompts and seeds
    (the spec is the appendix's)."""
    seed = (
        f"{p.experiment_seed} (each dialogue's seed derives from it, the condition and the replicate)"
        if p.experiment_seed is not None
        else "none in the spec (each dialogue's own seed is below)"
    )
    facts = Table(
        ["Fact", "Value"],
        [
            ["clonechat version", p.clonechat_version],
            ["git commit", _commit_cell(p.git_commit)],
            ["experiment seed", seed],
            ["stored", _when(p)],
        ],
    )
    models = Table(
        ["Condition", "Agent", "Model", "Parameters", "Recorded on turns"],
        [
            [c.name, a.agent, a.model, "; ".join(a.params) or "—", ", ".join(a.recorded) or "—"]
            for c in p.conditions
            for a in c.agents
        ],
    )
    prompts = prompts_table(p.conditions)
    blocks: list[Paragraph | Table | Section | Code] = [
        Paragraph(
            "What produced these data, to reproduce them: the software, the models and their sampling "
            "parameters, the seeds and the exact prompts (SHA-256, first 12 hex characters; the full "
            "texts are in the run database's `prompt` table). Server addresses, key names and file "
            "paths are not shown."
        ),
        facts,
        Section("Models and parameters", [models, *_settings_paragraphs(p)], level=3),
        Section("Prompts", [prompts], level=3),
        Section("Seeds", [Paragraph(f"**{c.name}**: {compact_seeds(c.seeds)}.") for c in p.conditions], level=3),
        Paragraph("The spec itself is in the appendix."),
    ]
    return Section("Reproducibility", blocks)


def prompts_table(conditions: Sequence[ConditionProvenance]) -> Table:
    """Prompt hashes with a row per prompt (system A, ..., each measure's) and a column per
    condition: a prompt the conditions share reads across its row at a glance."""
    roles = _distinct(role for c in conditions for role, _ in c.prompts)
    by_condition = [dict(c.prompts) for c in conditions]
    rows = [
        [role, *(", ".join(f"`{h}`" for h in prompts.get(role, ())) or "—" for prompts in by_condition)]
        for role in roles
    ]
    return Table(["Prompt", *(c.name for c in conditions)], rows)


def _settings_paragraphs(p: Provenance) -> list[Paragraph]:
    return [
        Paragraph(f"**{c.name}** (template `{c.template}`): {'; '.join(c.settings)}.")
        for c in p.conditions
        if c.settings
    ]
