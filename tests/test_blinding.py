"""Blinding, asserted on the HTTP payloads a real OpenAI-compatible client sent to a loopback
server: a prediction never reaches the agent it predicts (nor anyone else), unless the
condition reveals it, and then exactly in the next message of the agent it is about."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from typer.testing import CliRunner

from clonechat.cli import app
from tests.servers.fake_model import FakeModelServer, Reply, fake_model_server, openai_body

PARTNER_INSTRUCTION = "Predict that message"
SELF_INSTRUCTION = "predict your own reply"
REVEAL_NOTE = "your partner was asked to predict it"


def spec(server: FakeModelServer) -> str:
    return f"""\
name = "blind"
replicates = 1
max_turns = 4
seed = 1
concurrency = 1
model_a = "srv"

[prediction]
self_predict = true

[[conditions]]
name = "blind"
template = "clone-aware"

[[conditions]]
name = "revealed"
template = "clone-aware"
prediction = {{ self_predict = true, reveal = true }}

[models.srv]
provider = "openai-compatible"
base_url = "{server.url}/v1"
model = "m"
stream = false
"""


def test_predictions_never_reach_a_main_turn_unless_revealed(tmp_path: Path) -> None:
    with fake_model_server() as server:
        # Every reply is unique, so finding one in a later request is proof of a leak.
        server.script = [Reply(body=openai_body(f"unique-reply-{i:03d}")) for i in range(200)]
        spec_path, db = tmp_path / "blind.toml", tmp_path / "r.db"
        spec_path.write_text(spec(server))
        result = CliRunner().invoke(app, ["batch", str(spec_path), "--db", str(db)])
        assert result.exit_code == 0, result.output
        payloads = [r.json() for r in server.requests]

    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT c.name, n.kind, n.variant, n.content, t.content FROM node n "
            "JOIN dialogue d ON d.id = n.dialogue_id JOIN condition c ON c.id = d.condition_id "
            "LEFT JOIN node t ON t.id = n.target_node_id WHERE n.kind IN ('prediction', 'turn')"
        ).fetchall()
    predictions = [(cond, variant, text, target) for cond, kind, variant, text, target in rows if kind == "prediction"]
    assert len(predictions) == 2 * 4 * 2  # 2 conditions x 4 turns x (partner + self)

    def sent(payload: dict[str, object]) -> str:
        return "\n".join(str(m["content"]) for m in payload["messages"])  # type: ignore[attr-defined]

    def kind(payload: dict[str, object]) -> str:
        last = str(payload["messages"][-1]["content"])  # type: ignore[index]
        return "partner" if PARTNER_INSTRUCTION in last else "self" if SELF_INSTRUCTION in last else "main"

    main = [p for p in payloads if kind(p) == "main"]
    assert len(main) == 8 and len(payloads) == 8 + 16
    for condition, variant, text, target in predictions:
        containing = [p for p in payloads if text in sent(p)]
        if condition == "revealed" and variant == "partner":
            # Shown exactly once: in the request for the very message it predicted.
            assert len(containing) == 1, text
            assert kind(containing[0]) == "main" and REVEAL_NOTE in sent(containing[0])
            assert server_reply_for(containing[0], payloads) == target
        else:
            assert containing == [], f"{condition} {variant} prediction {text!r} was sent to a model"
    # No main turn of the blind condition carries an instruction or a reveal note.
    blind_main = main[:4]
    for payload in blind_main:
        text = sent(payload)
        assert PARTNER_INSTRUCTION not in text and SELF_INSTRUCTION not in text and REVEAL_NOTE not in text


def server_reply_for(payload: dict[str, object], payloads: list[dict[str, object]]) -> str:
    """The scripted reply to ``payload``: the server answered request i with unique-reply-i."""
    return f"unique-reply-{payloads.index(payload):03d}"
