"""The newer measures' spec keys (``[recognition]``, ``[self_knowledge]``, ``[convergence]``,
``[[interjections]]``): each mistake gets one clear line (file, line, key, reason), and specs
without them keep the canonical hash their experiments were stored with."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from clonechat.batch.spec import load_spec_file
from clonechat.cli import app
from clonechat.engine.protocol import ConvergenceRule, Interjection
from clonechat.measures import build_protocol
from clonechat.registry import Registry
from tests.test_batch_spec import GOOD, GOOD_HASH

#: GOOD's canonical hash is the one tests/test_batch_spec.py has kept since clonechat at eadbf82.
CHECK_IN = '\n[[interjections]]\nat = 2\ntemplate = "check-in"\n'

# (case id, spec text, expected message fragment, expected line)
MALFORMED: list[tuple[str, str, str, int]] = [
    (
        "interjection past max_turns",
        GOOD + CHECK_IN + '\n[[interjections]]\nat = 4\ntemplate = "check-in"\nto = "B"\n',
        "interjections[2].at: turn 4 is past max_turns (3): the interjection would never be made",
        15,
    ),
    (
        "interjection past a condition's max_turns",
        GOOD.replace("max_turns = 3", "max_turns = 6") + "max_turns = 2\n" + CHECK_IN.replace("at = 2", "at = 3"),
        "interjections[1].at: turn 3 is past max_turns (2)",
        12,
    ),
    (
        "condition's interjection past max_turns",
        GOOD + 'interjections = [{ at = 5, template = "check-in" }]\n',
        "conditions[1].interjections[1].at: turn 5 is past max_turns (3)",
        9,
    ),
    (
        "unknown interjection template",
        GOOD + CHECK_IN + '\n[[interjections]]\nat = 3\ntemplate = "chek-in"\n',
        "interjections[2].template: unknown interjection 'chek-in' (known: check-in, reveal-clone)",
        16,
    ),
    (
        "unknown interjection template in a condition",
        GOOD + 'interjections = [{ at = 1, template = "nope" }]\n',
        "conditions[1].interjections[1].template: unknown interjection 'nope'",
        9,
    ),
    (
        "interjection to nobody",
        GOOD + CHECK_IN + 'to = "C"\n',
        "interjections[1].to: Input should be 'A', 'B' or 'both'",
        13,
    ),
    (
        "interjection at 0",
        GOOD + CHECK_IN.replace("at = 2", "at = 0"),
        "interjections[1].at: Input should be greater",
        11,
    ),
    ("odd items", GOOD + "\n[recognition]\nitems = 3\n", "recognition.items: Input should be a multiple of 2", 11),
    (
        "no items",
        GOOD + "\n[recognition]\nitems = 0\n",
        "recognition.items: Input should be greater than or equal to 2",
        11,
    ),
    (
        "recognition context",
        GOOD + '\n[recognition]\ncontext = "some"\n',
        "recognition.context: Input should be 'dialogue' or 'none'",
        11,
    ),
    (
        "typo in recognition",
        GOOD + "\n[recognition]\nitem = 4\n",
        "recognition: unknown key 'item' (did you mean 'items'?)",
        11,
    ),
    (
        "unknown recognition template",
        GOOD + '\n[recognition]\ntemplate = "nope"\n',
        "recognition: unknown recognition 'nope' (known: default)",
        10,
    ),
    (
        "unknown self_knowledge template",
        GOOD + '\n[self_knowledge]\ntemplate = "nope"\n',
        "self_knowledge.template: unknown prediction 'nope' (known: partner, reveal, self)",
        11,
    ),
    (
        "condition's unknown self_knowledge template beside predictions",
        GOOD + 'prediction = true\nself_knowledge = { template = "nope" }\n',
        "conditions[1].self_knowledge.template: unknown prediction 'nope'",
        10,
    ),
    (
        "unknown prediction template beside self_knowledge",
        GOOD + 'prediction = { template = "nope" }\nself_knowledge = { template = "nope" }\n',
        "conditions[1].prediction: unknown prediction 'nope'",
        9,
    ),
    (
        "unknown convergence metric",
        GOOD + '\n[convergence]\nmetric = "overlap"\n',
        "convergence.metric: Input should be 'overlap_partner', 'overlap_self', 'repetition', 'symbol_rate' or",
        11,
    ),
    (
        "convergence threshold above 1",
        GOOD + "\n[convergence]\nthreshold = 1.5\n",
        "convergence.threshold: Input should be less than or equal to 1",
        11,
    ),
    (
        "convergence action",
        GOOD + '\n[convergence]\naction = "halt"\n',
        "convergence.action: Input should be 'stop' or 'mark'",
        11,
    ),
    ("convergence = true", GOOD + "convergence = true\n", "conditions[1].convergence: must be a table, or false", 9),
    (
        "unknown self_knowledge.cross_model",
        GOOD + '\n[self_knowledge]\ncross_model = "nope"\n',
        "self_knowledge.cross_model: unknown model 'nope' (known: local, scripted)",
        11,
    ),
    (
        "condition's unknown self_knowledge.cross_model",
        GOOD + 'self_knowledge = { cross_model = "nope" }\n',
        "conditions[1].self_knowledge.cross_model: unknown model 'nope'",
        9,
    ),
]


@pytest.mark.parametrize(("case", "text", "message", "line"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_measure_is_refused_with_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, text: str, message: str, line: int
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray models.toml or .env
    spec, db = tmp_path / "bad.toml", tmp_path / "runs.db"
    spec.write_text(text)
    result = CliRunner().invoke(app, ["batch", str(spec), "--db", str(db)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {spec}:{line}: "), lines[0]
    assert message in lines[0], lines[0]
    assert not db.exists(), "a refused spec must not create a database"


def test_a_spec_without_the_new_keys_keeps_its_canonical_hash(tmp_path: Path) -> None:
    """Experiments stored before these keys existed must resume: their spec's hash is unchanged,
    also when the new keys are written out switched off."""
    old = load_spec_file(_write(tmp_path / "ok.toml", GOOD), registry=Registry())
    assert old.canonical_hash == GOOD_HASH
    switched_off = GOOD.replace(
        "seed = 1", "seed = 1\nrecognition = false\nself_knowledge = false\nconvergence = false\ninterjections = []"
    )
    assert load_spec_file(_write(tmp_path / "off.toml", switched_off), registry=Registry()).canonical_hash == GOOD_HASH
    for extra in ("\n[recognition]\n", "\n[convergence]\n", "\n[self_knowledge]\n", CHECK_IN):
        loaded = load_spec_file(_write(tmp_path / "new.toml", GOOD + extra), registry=Registry())
        assert loaded.canonical_hash != GOOD_HASH, extra


SPEC = """\
name = "measures"
max_turns = 6
seed = 1
model_a = "scripted"

[recognition]
items = 6
context = "none"

[convergence]
metric = "repetition"
threshold = 0.9
turns = 2
action = "mark"

[[interjections]]
at = 2
template = "check-in"
to = "B"

[[interjections]]
at = 4
template = "reveal-clone"

[[conditions]]
name = "top"
template = "clone-aware"

[[conditions]]
name = "own"
template = "clone-aware"
recognition = false
convergence = { turns = 4 }
interjections = [{ at = 6, template = "check-in", to = "A" }]

[[conditions]]
name = "none"
template = "clone-aware"
convergence = false
interjections = []
"""


def test_measures_reach_the_engine_protocol_with_per_condition_overrides(tmp_path: Path) -> None:
    loaded = load_spec_file(_write(tmp_path / "measures.toml", SPEC), registry=Registry())
    protocols = {}
    for condition in loaded.conditions:
        rendered = condition.blueprint.measures
        texts = {p.hash: p.text for p in rendered.prompts.values()}
        protocols[condition.name], _, _ = build_protocol(rendered.settings(), texts, lambda _: None)  # type: ignore[arg-type,return-value]
    top, own, none = protocols["top"], protocols["own"], protocols["none"]

    assert top.recognition is not None and (top.recognition.items, top.recognition.context) == (6, "none")
    assert "<message>\nhello\n</message>" in top.recognition.question("hello")
    assert top.convergence == ConvergenceRule("repetition", 0.9, 2, stop=False)
    assert [(i.at, i.to) for i in top.interjections] == [(2, "B"), (4, None)]  # "both" is None: everyone
    assert "the conversation is going well" in top.interjections[0].text
    assert "another instance of you, a scripted test model" in top.interjections[1].text

    # A condition's table replaces the top-level one (its defaults, not the top's values).
    assert own.recognition is None
    assert own.convergence == ConvergenceRule("overlap_partner", 0.8, 4, stop=True)
    assert [(i.at, i.to) for i in own.interjections] == [(6, "A")]
    assert isinstance(own.interjections[0], Interjection)

    assert none.convergence is None and none.interjections == ()
    assert none.recognition is not None
    assert (none.recognition.items, none.recognition.context, none.recognition.max_tokens) == (6, "none", 8)
    assert none.recognition.question("x") == top.recognition.question("x")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CROSS_REVEAL = """\
name = "reveal"
model_a = "scripted"
max_turns = 6

[[interjections]]
at = 3
template = "reveal-clone"

[[conditions]]
name = "clone"
template = "told-other-ai"

[[conditions]]
name = "cross"
template = "told-other-ai"
model_b = "other"

[models.other]
provider = "scripted"
display_name = "Another Model"
"""


def test_an_interjection_is_rendered_for_each_addressee(tmp_path: Path) -> None:
    """The reveal names each agent's own model: one node seen by both in a clone pair (the
    same text), one node per agent in a cross-model pair (each told about itself)."""
    loaded = load_spec_file(_write(tmp_path / "reveal.toml", CROSS_REVEAL), registry=Registry())
    placed = {}
    for condition in loaded.conditions:
        rendered = condition.blueprint.measures
        texts = {p.hash: p.text for p in rendered.prompts.values()}
        protocol, _, _ = build_protocol(rendered.settings(), texts, lambda _: None)  # type: ignore[arg-type,return-value]
        placed[condition.name] = [(i.at, i.to, i.text) for i in protocol.interjections]
    [(at, to, text)] = placed["clone"]
    assert (at, to) == (3, None) and "another instance of you, a scripted test model" in text
    (at_a, to_a, text_a), (at_b, to_b, text_b) = placed["cross"]
    assert (at_a, to_a, at_b, to_b) == (3, "A", 3, "B")
    assert "another instance of you, a scripted test model" in text_a
    assert "another instance of you, Another Model" in text_b
