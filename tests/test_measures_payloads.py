"""The newer measures' blinding, asserted on the HTTP payloads a real OpenAI-compatible client
sent to a loopback server: a self-recognition question shows the message's text and nothing
that says who wrote it, and a researcher's interjection reaches only the agent it is addressed
to, in every request made for that agent after it (main turns and side channels alike)."""

from __future__ import annotations

import sqlite3
import tomllib
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clonechat.cli import app
from tests.servers.fake_model import Reply, fake_model_server, openai_body

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
RECOGNITION_TEMPLATE: str = tomllib.loads((PROMPTS / "recognition" / "default.toml").read_text())["template"]
HEAD, TAIL = RECOGNITION_TEMPLATE.split("$message")
REPORT_TEMPLATE: str = tomllib.loads((PROMPTS / "reports" / "default.toml").read_text())["template"]
#: Distinctive words of each interjection template (prompts/interjections/).
CHECK_IN = "Thank you, the conversation is going well."
REVEAL = "Something you were told at the start was not true"
MODELS = {"alpha-model": "A", "beta-model": "B"}
#: Words that would tell an agent who wrote a message.
AUTHOR_HINTS = ["alpha-model", "beta-model", "you wrote", "partner wrote", "your partner said", "A:", "B:"]

MARKERS = {
    "partner": "Predict that message",
    "self": "predict your own reply",
    "coordination": "Pick a whole number",
    "report": "The conversation is over",
    "recognition": "Did you write this message",
}


def spec(url: str, context: str) -> str:
    models = "".join(
        f'\n[models.{name}]\nprovider = "openai-compatible"\nbase_url = "{url}/v1"\nmodel = "{name}-model"\n'
        "stream = false\n"
        for name in ("alpha", "beta")
    )
    return f"""\
name = "payloads"
replicates = 1
max_turns = 6
seed = 3
concurrency = 1
first_speaker = "A"
model_a = "alpha"
model_b = "beta"

[prediction]
self_predict = true

[coordination]
tasks = ["number"]

[report_back]

[recognition]
items = 4
context = "{context}"

[[interjections]]
at = 3
template = "check-in"
to = "B"

[[interjections]]
at = 4
template = "reveal-clone"
to = "A"

[[conditions]]
template = "clone-aware"
{models}"""


def run(tmp_path: Path, context: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Run the spec against the loopback server; the payloads in the order sent, and who wrote
    each agent turn (by its text)."""
    with fake_model_server() as server:
        # Every reply is unique, so finding one in a request says where it came from.
        server.script = [Reply(body=openai_body(f"unique-reply-{i:03d}")) for i in range(100)]
        spec_path, db = tmp_path / f"{context}.toml", tmp_path / f"{context}.db"
        spec_path.write_text(spec(server.url, context))
        result = CliRunner().invoke(app, ["batch", str(spec_path), "--db", str(db)])
        assert result.exit_code == 0, result.output
        payloads = [r.json() for r in server.requests]
    with closing(sqlite3.connect(db)) as conn:
        authors = dict(
            conn.execute("SELECT content, speaker FROM node WHERE kind = 'turn' AND speaker != 'researcher'")
        )
        researcher = conn.execute(
            "SELECT variant, turn_index FROM node WHERE kind = 'turn' AND speaker = 'researcher' ORDER BY turn_index"
        ).fetchall()
    assert researcher == [("B", 3), ("A", 5)]  # numbered with the turns, addressed as the spec says
    assert sorted(authors.values()) == list("AAABBB")
    return payloads, authors


def agent(payload: dict[str, Any]) -> str:
    return MODELS[payload["model"]]


def kind(payload: dict[str, Any]) -> str:
    last = str(payload["messages"][-1]["content"])
    return next((k for k, marker in MARKERS.items() if marker in last), "main")


def sent(payload: dict[str, Any]) -> str:
    return "\n".join(str(m["content"]) for m in payload["messages"])


def question_of(payload: dict[str, Any]) -> tuple[str, str, str]:
    """A recognition request's last message split into (the view's text before the question,
    the question, the message it shows)."""
    last = str(payload["messages"][-1]["content"])
    start = last.rfind(HEAD)
    assert start >= 0 and last.endswith(TAIL), last
    question = last[start:]
    return last[:start], question, question[len(HEAD) : len(question) - len(TAIL)]


@pytest.mark.parametrize("context", ["dialogue", "none"])
def test_recognition_questions_carry_the_message_text_and_nothing_about_its_author(
    tmp_path: Path, context: str
) -> None:
    payloads, authors = run(tmp_path, context)
    asked = [p for p in payloads if kind(p) == "recognition"]
    assert len(asked) == 8  # 3 turns each: 2 own and 2 of the partner's, for each agent
    for name in "AB":
        mine = [p for p in asked if agent(p) == name]
        shown = [question_of(p)[2] for p in mine]
        assert len(set(shown)) == 4
        # Balanced, and each shown message is a turn's exact text.
        assert sorted(authors[text] == name for text in shown) == [False, False, True, True]
        main_system = next(p for p in payloads if kind(p) == "main" and agent(p) == name)["messages"][0]
        for payload in mine:
            _, question, message = question_of(payload)
            # The question is the fixed template around the message's text: nothing else in it
            # depends on who wrote the message.
            assert question == HEAD + message + TAIL
            assert not any(hint in HEAD + TAIL for hint in AUTHOR_HINTS)
            # Nor anywhere in the request: the partner's model is never named to the agent.
            partner_model = next(model for model, who in MODELS.items() if who != name)
            assert partner_model not in sent(payload)
            messages = payload["messages"]
            if context == "none":
                assert messages == [main_system, {"role": "user", "content": question}]
        # An own item and a partner's item differ only by the message text: same view before
        # the question, same question around it.
        first = mine[0]
        for payload in mine[1:]:
            assert payload["messages"][:-1] == first["messages"][:-1]
            assert question_of(payload)[0] == question_of(first)[0]
        if context == "dialogue":
            # The view before the question is the agent's own: its system prompt, its own
            # messages as the assistant's, everything else as incoming.
            assert first["messages"][0] == main_system
            # Exactly the view the agent's report-back is asked with, the question in its place.
            report = next(p for p in payloads if kind(p) == "report" and agent(p) == name)
            assert first["messages"][:-1] == report["messages"][:-1]
            assert question_of(first)[0] == str(report["messages"][-1]["content"]).removesuffix(REPORT_TEMPLATE)
            own = {m["content"] for m in first["messages"] if m["role"] == "assistant"}
            assert own == {text for text, who in authors.items() if who == name}
    # No other request ever carries the recognition question.
    assert all(HEAD not in sent(p) for p in payloads if kind(p) != "recognition")


@pytest.mark.parametrize("context", ["dialogue", "none"])
def test_an_interjection_reaches_its_addressee_only_in_every_request_after_it(tmp_path: Path, context: str) -> None:
    payloads, _ = run(tmp_path, context)
    kinds = [kind(p) for p in payloads]
    # 6 turns, a partner's and a self prediction of each, 2 coordination phases x 2 agents,
    # 2 reports, 4 recognition questions each.
    assert len(payloads) == 6 + 12 + 4 + 2 + 8
    assert kinds.count("main") == 6 and kinds.count("coordination") == 4 and kinds.count("report") == 2
    main = [i for i, k in enumerate(kinds) if k == "main"]
    assert [agent(payloads[i]) for i in main] == list("ABABAB")
    # Put on the path after turn 2 (before turn 3's predictions) and after turn 3.
    placed = {CHECK_IN: ("B", main[1]), REVEAL: ("A", main[2])}
    for i, payload in enumerate(payloads):
        for text, (to, after) in placed.items():
            # Recognition without context is asked with the system prompt only: no conversation.
            blind = kinds[i] == "recognition" and context == "none"
            expected = not blind and agent(payload) == to and i > after
            assert (text in sent(payload)) == expected, (i, kinds[i], agent(payload), text)
    # Every kind of request for the addressee came after the interjection at least once.
    for text, (to, after) in placed.items():
        later = {kinds[i] for i in range(after + 1, len(payloads)) if agent(payloads[i]) == to}
        assert later == {"main", "partner", "self", "coordination", "report", "recognition"}, text
