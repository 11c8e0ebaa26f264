"""Spec validation: every malformed spec gets one clear line (file, line, key, reason), exit
code 2, and the database is left exactly as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clonechat.batch.spec import load_spec_file
from clonechat.batch.toml_lines import line_of
from clonechat.cli import app
from clonechat.registry import Registry
from clonechat.store.database import Database

GOOD = """\
name = "ok"
replicates = 2
max_turns = 3
seed = 1
model_a = "scripted"

[[conditions]]
template = "clone-aware"
"""

#: GOOD's canonical hash before the ``primary`` key existed (clonechat at eadbf82).
GOOD_HASH = "1d8abd8f6e1f26264f8b59c26b0ea8541e974fa01c35b83527af8d0a370fdef6"

# (case id, spec text, expected message fragment, expected line or None)
MALFORMED: list[tuple[str, str, str, int | None]] = [
    ("toml syntax", 'name = "x"\nreplicates = \n', "not valid TOML", 2),
    ("unknown top key", GOOD + "replicats = 3\n", "unknown key 'replicats' (did you mean 'replicates'?)", None),
    (
        "wrong type",
        GOOD.replace("replicates = 2", 'replicates = "two"'),
        "replicates: Input should be a valid integer",
        2,
    ),
    ("zero replicates", GOOD.replace("replicates = 2", "replicates = 0"), "greater than or equal to 1", 2),
    (
        "float concurrency",
        GOOD.replace("seed = 1", "seed = 1\nconcurrency = 1.5"),
        "concurrency: Input should be a valid integer",
        5,
    ),
    ("no conditions", 'name = "x"\nmodel_a = "scripted"\n', "required key 'conditions' is missing", None),
    ("empty conditions", 'name = "x"\nconditions = []\n', "conditions: List should have at least 1 item", 2),
    ("conditions not a list", 'name = "x"\nconditions = "aware"\n', "conditions: Input should be a valid list", 2),
    (
        "condition without template",
        GOOD + '\n[[conditions]]\nname = "b"\n',
        "conditions[2]: required key 'template'",
        10,
    ),
    (
        "typo in condition",
        GOOD + 'modle_b = "x"\n',
        "conditions[1]: unknown key 'modle_b' (did you mean 'model_b'?)",
        9,
    ),
    ("unknown template", GOOD.replace('"clone-aware"', '"clone-awre"'), "unknown condition template 'clone-awre'", 8),
    ("unknown opening", GOOD + 'opening = "hello"\n', "unknown opening template 'hello'", 9),
    ("unknown model", GOOD + 'model_b = "gpt-9"\n', "conditions[1].model_b: unknown model 'gpt-9'", 9),
    ("unknown top model", GOOD.replace('"scripted"', '"lokal"'), "model_a: unknown model 'lokal'", 5),
    (
        "duplicate conditions",
        GOOD + '\n[[conditions]]\ntemplate = "clone-aware"\n',
        "conditions[1] is also named 'clone-aware'",
        11,
    ),
    (
        "temperature range",
        GOOD + "\n[params]\ntemperature = 3.5\n",
        "params.temperature: Input should be less than or equal to 2",
        11,
    ),
    ("unknown param", GOOD + "\n[params]\ntemp = 0.5\n", "unknown key 'temp' (did you mean 'temperature'?)", 11),
    (
        "condition params",
        GOOD + "\n[conditions.params]\nmax_tokens = 0\n",
        "conditions[1].params.max_tokens: Input should be greater than or equal to 1",
        11,
    ),
    ("unknown variable", GOOD + '\n[variables]\nmood = "calm"\n', "unknown prompt variable 'mood'", None),
    ("bad first speaker", GOOD + 'first_speaker = "C"\n', "Input should be 'A', 'B' or 'alternate'", 9),
    ("bad name", GOOD.replace('name = "ok"', 'name = "my experiment!"'), "name: names may use letters", 1),
    (
        "inline model without url",
        GOOD + '\n[models.srv]\nprovider = "openai-compatible"\nmodel = "m"\n',
        "models.srv: 'base_url' is required",
        10,
    ),
    # The line of the key at fault, not of its table's header.
    ("inline model bad provider", GOOD + '\n[models.srv]\nprovider = "gpt"\n', "provider must be local", 11),
    (
        "inline model bad connections",
        GOOD
        + '\n[models.srv]\nprovider = "openai-compatible"\nbase_url = "http://x"\nmodel = "m"\nmax_connections = 0\n',
        "models.srv: max_connections must be at least 1",
        14,
    ),
    (
        "models entry not a table",
        GOOD.replace('name = "ok"', 'name = "ok"\nmodels = { srv = 1 }'),
        "must be a table",
        2,
    ),
    (
        "missing api key",
        GOOD
        + 'model_b = "srv"\n\n[models.srv]\nprovider = "openai-compatible"\nbase_url = "http://127.0.0.1:9/v1"\n'
        + 'model = "m"\napi_key_env = "CLONECHAT_TEST_UNSET_KEY"\n',
        "needs an API key: set the environment variable CLONECHAT_TEST_UNSET_KEY",
        15,
    ),
    (
        "typo in prediction table",
        GOOD + "\n[prediction]\nself_predcit = true\n",
        "prediction: unknown key 'self_predcit' (did you mean 'self_predict'?)",
        11,
    ),
    (
        "unknown cross-prediction model",
        GOOD.replace("seed = 1", 'seed = 1\nprediction = { cross_model = "nope" }'),
        "prediction.cross_model: unknown model 'nope'",
        5,
    ),
    (
        "unknown coordination task",
        GOOD + '\n[coordination]\ntasks = ["numbr"]\n',
        "unknown coordination 'numbr' (known: city, colour, letter, number, pair)",
        None,
    ),
    (
        "coordination without tasks",
        GOOD + "\n[coordination]\nwhen = 'before'\n",
        "coordination: required key 'tasks' is missing",
        None,
    ),
    (
        "coordination when",
        GOOD + '\n[coordination]\ntasks = ["number"]\nwhen = "during"\n',
        "coordination.when: Input should be 'before', 'after' or 'both'",
        12,
    ),
    (
        "coordination = true",
        GOOD + "coordination = true\n",
        "conditions[1].coordination: must be a table, or false to switch it off",
        9,
    ),
    (
        "unknown control",
        GOOD.replace("seed = 1", 'seed = 1\ncontrol = "nope"'),
        "control: no condition is named 'nope' (conditions: clone-aware)",
        5,
    ),
    ("primary names no measure", GOOD + '\n[[primary]]\ncomparison = "chance"\n', "give either 'scorer'", 10),
    (
        "primary unknown scorer",
        GOOD.replace("seed = 1", "seed = 1\nprediction = true") + '\n[[primary]]\nscorer = "chrff"\n',
        "primary[1].scorer: unknown scorer 'chrff' (known: exact,",
        12,
    ),
    (
        "primary scorer without predictions",
        GOOD + '\n[[primary]]\nscorer = "chrf"\n',
        "primary[1].scorer: no condition in scope makes predictions",
        11,
    ),
    (
        "primary unknown condition",
        GOOD.replace("seed = 1", "seed = 1\nprediction = true")
        + '\n[[primary]]\nscorer = "chrf"\ncondition = "clone-awar"\n',
        "primary[1].condition: no condition is named 'clone-awar'",
        13,
    ),
    (
        "primary vs control without one",
        GOOD.replace("seed = 1", "seed = 1\nprediction = true")
        + '\n[[primary]]\nscorer = "chrf"\ncomparison = "control"\n',
        "comparison 'control' needs a top-level 'control' condition",
        13,
    ),
    (
        "primary task not asked",
        GOOD.replace("seed = 1", 'seed = 1\ncoordination = { tasks = ["number"] }')
        + '\n[[primary]]\ntask = "colour"\n',
        "primary[1].task: task 'colour' is not asked (tasks asked: number)",
        12,
    ),
    (
        "primary phase on a scorer",
        GOOD + '\n[[primary]]\nscorer = "chrf"\nphase = "after"\n',
        "'phase' belongs to a coordination measure",
        10,
    ),
    (
        "unknown report template",
        GOOD + 'report_back = { template = "nope" }\n',
        "unknown report 'nope' (known: default)",
        None,
    ),
]


def _digest(path: Path) -> str:
    return "".join(
        hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.parent.glob(path.name + "*")) if p.is_file()
    )


@pytest.fixture
def existing_db(tmp_path: Path) -> Path:
    path = tmp_path / "runs.db"
    Database.open(path).close()
    return path


@pytest.mark.parametrize(("case", "text", "message", "line"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_spec_is_refused_with_one_clear_line(
    tmp_path: Path,
    existing_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    text: str,
    message: str,
    line: int | None,
) -> None:
    monkeypatch.delenv("CLONECHAT_TEST_UNSET_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray models.toml or .env
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    before = _digest(existing_db)
    result = CliRunner().invoke(app, ["batch", str(spec), "--db", str(existing_db)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {spec}")
    assert message in lines[0]
    if line is not None:
        assert lines[0].startswith(f"error: {spec}:{line}: "), lines[0]
    assert _digest(existing_db) == before, "a refused spec must leave the database untouched"
    # Nor does a refused spec create a database that did not exist.
    fresh = tmp_path / "fresh.db"
    result = CliRunner().invoke(app, ["batch", str(spec), "--db", str(fresh)])
    assert result.exit_code == 2
    assert not fresh.exists()


def test_spec_file_not_found(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["batch", str(tmp_path / "nope.toml"), "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: spec file not found: {tmp_path / 'nope.toml'}"


def test_good_spec_loads_with_defaults_and_name_from_file(tmp_path: Path) -> None:
    spec = tmp_path / "my-exp.toml"
    spec.write_text(GOOD.replace('name = "ok"\n', ""))
    loaded = load_spec_file(spec, registry=Registry())
    assert loaded.name == "my-exp"
    planned = loaded.dialogues()
    assert [(d.condition, d.replicate, d.first_speaker) for d in planned] == [
        ("clone-aware", 1, "A"),
        ("clone-aware", 2, "B"),
    ]
    assert planned[0].seed != planned[1].seed
    # Seeds derive from the spec's seed: the same spec plans the same dialogues.
    assert [d.seed for d in load_spec_file(spec, registry=Registry()).dialogues()] == [d.seed for d in planned]


def test_canonical_hash_ignores_layout_and_runtime_keys(tmp_path: Path) -> None:
    a = load_spec_file(_write(tmp_path / "a.toml", GOOD), registry=Registry())
    relaid = "# a comment\nconcurrency = 9\n" + GOOD.replace("replicates = 2", "replicates   =   2  # two")
    b = load_spec_file(_write(tmp_path / "a2.toml", relaid), registry=Registry())
    assert a.canonical_hash == b.canonical_hash
    c = load_spec_file(
        _write(tmp_path / "a3.toml", GOOD.replace("max_turns = 3", "max_turns = 4")), registry=Registry()
    )
    assert c.canonical_hash != a.canonical_hash


def test_specs_without_primary_measures_keep_their_hash(tmp_path: Path) -> None:
    """Adding the ``primary`` key must not change the hash of specs written before it existed
    (a changed hash refuses to resume their experiments). The figure is the hash this spec had
    before ``primary`` was added."""
    loaded = load_spec_file(_write(tmp_path / "ok.toml", GOOD), registry=Registry())
    assert loaded.canonical_hash == GOOD_HASH
    planned = GOOD.replace("seed = 1", "seed = 1\nprediction = true") + '\n[[primary]]\nscorer = "chrf"\n'
    with_primary = load_spec_file(_write(tmp_path / "p.toml", planned), registry=Registry())
    assert with_primary.spec.primary[0].scorer == "chrf" and with_primary.canonical_hash != GOOD_HASH


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_line_of_understands_tables_arrays_and_dotted_keys() -> None:
    text = (
        'a = 1\n[[conditions]]\nx = 1\n[[conditions]]\ny.z = 2\n[conditions.params]\nt = 1\n[p]\nq = """\nk = 3\n"""\n'
    )
    assert line_of(text, ("a",)) == 1
    assert line_of(text, ("conditions", 0, "x")) == 3
    assert line_of(text, ("conditions", 1, "y", "z")) == 5
    assert line_of(text, ("conditions", 1, "params", "t")) == 7
    assert line_of(text, ("conditions", 1, "missing")) == 4
    assert line_of(text, ("p", "k")) == 8  # inside a multi-line string is not a key
    assert line_of(text, ("nowhere",)) is None
