"""Prompt templates: the shipped ones render, and every kind of mistake is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from clonechat.errors import TemplateError
from clonechat.prompts import PromptLibrary, load_template
from clonechat.providers.scripted import ScriptedProvider
from clonechat.registry import ProviderPool
from clonechat.session import DialogueRequest, prepare_dialogue
from clonechat.store.database import Database
from clonechat.store.writer import open_writer

STANDARD = {"model_name": "M", "partner_model_name": "P", "stop_phrase": "^C^C", "max_turns": 6}


@pytest.mark.parametrize("condition", ["clone-aware", "told-other-ai", "told-human", "no-frame"])
def test_shipped_conditions_render(condition: str) -> None:
    rendered = PromptLibrary().get("conditions", condition).render(STANDARD)
    assert "$" not in rendered.text
    assert "^C^C" in rendered.text
    assert len(rendered.hash) == 64


def test_framings_say_what_they_should() -> None:
    lib = PromptLibrary()
    text = {name: lib.get("conditions", name).render(STANDARD).text for name in lib.names("conditions")}
    assert "instance of yourself" in text["clone-aware"]
    assert "researcher" in text["clone-aware"]
    assert "different AI" in text["told-other-ai"]
    assert "a person" in text["told-human"]
    assert "complete freedom" in text["no-frame"]
    assert "yourself" not in text["told-human"] + text["told-other-ai"] + text["no-frame"]


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "conditions" / "t.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def test_undeclared_variable_names_template_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, 'template = "Hi $who and $whom"\n[variables]\nwho = "x"\n')
    with pytest.raises(TemplateError, match=r"conditions/t .*unknown variable 'whom'"):
        load_template(path, "conditions")


def test_missing_value_names_template_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, 'template = "Hi $who"\n[variables]\nwho = "x"\n')
    with pytest.raises(TemplateError, match=r"conditions/t .*no value for variable 'who'"):
        load_template(path, "conditions").render({})


def test_default_fills_missing_value(tmp_path: Path) -> None:
    path = write(tmp_path, 'template = "Hi ${who}!"\n[variables]\nwho = { description = "x", default = "you" }\n')
    assert load_template(path, "conditions").render({}).text == "Hi you!"
    assert load_template(path, "conditions").render({"who": "me"}).text == "Hi me!"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('template = "cost: $5"\n', "malformed placeholder"),
        ("template = \n", "not valid TOML"),
        ('description = "no template"\n', "missing 'template'"),
        ('template = "x"\nvariables = 3\n', r"\[variables\] must be a table"),
    ],
)
def test_malformed_templates(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        load_template(write(tmp_path, body), "conditions")


def test_unknown_condition_lists_known_ones() -> None:
    with pytest.raises(TemplateError, match=r"unknown condition 'nope' \(known: clone-aware, no-frame"):
        PromptLibrary().get("conditions", "nope")


@pytest.mark.anyio
async def test_unknown_user_variable_is_refused_before_anything_is_written(db: Database) -> None:
    pool = ProviderPool()
    pool.add("scripted", ScriptedProvider())
    async with open_writer(db) as writer:
        with pytest.raises(TemplateError, match="unknown prompt variable 'colour'"):
            await prepare_dialogue(writer, DialogueRequest(model_a="scripted", variables={"colour": "red"}), pool)
    with db.session() as session:
        assert session.connection().exec_driver_sql("SELECT COUNT(*) FROM dialogue").scalar_one() == 0


@pytest.mark.anyio
async def test_declared_user_variable_reaches_the_prompt(db: Database) -> None:
    pool = ProviderPool()
    pool.add("scripted", ScriptedProvider())
    request = DialogueRequest(
        model_a="scripted", condition="told-other-ai", variables={"partner_description": "a chess engine"}
    )
    async with open_writer(db) as writer:
        prepared = await prepare_dialogue(writer, request, pool)
    assert "conversation with a chess engine" in prepared.agents[0].system_prompt
