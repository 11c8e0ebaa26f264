"""The measurement protocol in the engine: predictions (blinded unless revealed), the
self-prediction and cross-model controls, coordination questions and reports-back. Scripted
models: this is the engine's logic; the real model runs it end to end in test_experiment_e2e."""

from __future__ import annotations

import anyio
import pytest

from clonechat.engine.dialogue import run_dialogue
from clonechat.engine.events import NodeCompleted
from clonechat.engine.protocol import CoordinationQuestion, PredictionProtocol, Protocol, side_key
from clonechat.engine.records import NodeRecord
from clonechat.errors import ProviderError
from clonechat.providers.base import ChatRequest
from clonechat.providers.scripted import ScriptedProvider
from tests.helpers import EventLog, new_path, settings, two_agents

pytestmark = pytest.mark.anyio

PREDICT = "PREDICT-PARTNER-INSTRUCTION"
PREDICT_SELF = "PREDICT-SELF-INSTRUCTION"


def numbered(request: ChatRequest) -> str:
    """Each reply is unique and says what kind of request it answered, so a leak is visible."""
    last = request.messages[-1].content
    tag = "prediction" if PREDICT in last or PREDICT_SELF in last else "message"
    return f"{tag}-{request.cache_key}-{request.params.seed}"


def nodes(log: EventLog) -> list[NodeRecord]:
    out: list[NodeRecord] = []
    for event in log.of(NodeCompleted):
        assert isinstance(event, NodeCompleted)
        out += [event.node, *event.side]
    return out


def everything_sent(request: ChatRequest) -> str:
    return "\n".join(m.content for m in request.messages)


async def test_predictions_are_made_before_each_turn_linked_to_it_and_blinded() -> None:
    provider = ScriptedProvider(numbered)
    cross = ScriptedProvider(lambda r: f"cross-guess-{r.params.seed}", model_name="other-model")
    protocol = Protocol(prediction=PredictionProtocol(PREDICT, PREDICT_SELF, cross_provider=cross))
    log = EventLog()
    outcome = await run_dialogue(settings(max_turns=4, protocol=protocol), two_agents(provider), new_path(), log)
    assert outcome.status == "completed"

    stored = nodes(log)
    turns = [n for n in stored if n.kind == "turn"]
    predictions = [n for n in stored if n.kind == "prediction"]
    assert len(turns) == 4
    assert len(predictions) == 12  # partner, self and cross for each of the 4 turns
    for turn in turns:
        made = {p.variant: p for p in predictions if p.target_node_id == turn.id}
        assert set(made) == {"partner", "self", "cross"}
        assert made["partner"].speaker != turn.speaker  # the partner predicts the speaker
        assert made["self"].speaker == turn.speaker
        assert made["cross"].model == "other-model"
        for prediction in made.values():
            # A prediction hangs off the node before the turn: a side branch, not the path.
            assert prediction.parent_id == turn.parent_id
            assert prediction.turn_index == turn.turn_index
    # The path holds only the conversation.
    assert all(n.kind in ("opening", "turn") for n in outcome.path)

    # Blinding, on what the providers actually received: no main-turn request carries any
    # prediction text or prediction instruction.
    predicted_texts = [p.content for p in predictions]
    main_requests = [r for r in provider.requests if PREDICT not in r.messages[-1].content]
    main_requests = [r for r in main_requests if PREDICT_SELF not in r.messages[-1].content]
    assert len(main_requests) == 4
    for request in main_requests:
        sent = everything_sent(request)
        assert PREDICT not in sent and PREDICT_SELF not in sent
        for text in predicted_texts:
            assert text not in sent
    # The partner's prediction request is the partner's own view plus the instruction.
    a_predicts_turn2 = next(
        r for r in provider.requests if r.messages[-1].content.endswith(PREDICT) and r.cache_key == "D1:A"
    )
    assert a_predicts_turn2.messages[0].content == "system A"
    # The cross-model predictor sees exactly what the partner saw, turn by turn.
    partner_requests = [r for r in provider.requests if r.messages[-1].content.endswith(PREDICT)]
    assert len(cross.requests) == len(partner_requests) == 4
    for theirs, partners in zip(cross.requests, partner_requests, strict=True):
        assert theirs.messages == partners.messages
        assert theirs.cache_key == "D1:cross"


async def test_reveal_shows_the_partner_prediction_to_the_speaker_only_in_that_condition() -> None:
    provider = ScriptedProvider(numbered)
    protocol = Protocol(prediction=PredictionProtocol(PREDICT, reveal=lambda p: f"REVEALED<{p}>"))
    log = EventLog()
    await run_dialogue(settings(max_turns=3, protocol=protocol), two_agents(provider), new_path(), log)
    predictions = {p.target_node_id: p for p in nodes(log) if p.kind == "prediction"}
    turns = [n for n in nodes(log) if n.kind == "turn"]
    main_requests = [r for r in provider.requests if PREDICT not in r.messages[-1].content]
    for turn, request in zip(turns, main_requests, strict=True):
        assert f"REVEALED<{predictions[turn.id].content}>" in everything_sent(request)


async def test_coordination_before_and_after_and_reports_back() -> None:
    provider = ScriptedProvider(lambda r: f"answer-{r.params.seed}")
    protocol = Protocol(
        coordination=(CoordinationQuestion("number", "PICK A NUMBER"), CoordinationQuestion("pair", "HEADS OR TAILS")),
        report_instruction="WRITE TO THE RESEARCHER",
    )
    log = EventLog()
    outcome = await run_dialogue(settings(max_turns=2, protocol=protocol), two_agents(provider), new_path(), log)
    stored = nodes(log)
    coordination = [n for n in stored if n.kind == "coordination"]
    assert sorted((n.variant, n.speaker) for n in coordination) == sorted(
        (f"{task}@{phase}", agent)
        for task in ("number", "pair")
        for phase in ("before", "after")
        for agent in ("A", "B")
    )
    reports = [n for n in stored if n.kind == "report"]
    assert sorted(n.speaker for n in reports) == ["A", "B"]
    assert all(n.parent_id == outcome.path[-1].id for n in reports)
    # Before the dialogue an agent sees only its system prompt and the question.
    before = provider.requests[:2]
    assert [[(m.role, m.content) for m in r.messages] for r in before] == [
        [("system", "system A"), ("user", "PICK A NUMBER")],
        [("system", "system B"), ("user", "PICK A NUMBER")],
    ]
    # Nothing of it reaches the conversation: the main turns see none of the questions.
    main = [r for r in provider.requests if "answer" not in r.messages[-1].content and r.params.max_tokens == 200]
    for request in provider.requests:
        last = request.messages[-1].content
        if not any(q in last for q in ("PICK A NUMBER", "HEADS OR TAILS", "WRITE TO THE RESEARCHER")):
            main.append(request)
    assert len({id(r) for r in main}) >= 2
    for request in main:
        last = request.messages[-1].content
        if any(q in last for q in ("PICK A NUMBER", "HEADS OR TAILS", "WRITE TO THE RESEARCHER")):
            continue
        sent = everything_sent(request)
        assert "PICK A NUMBER" not in sent and "HEADS OR TAILS" not in sent and "answer-" not in sent.split("\n")[0]
    # Order: coordination before the first turn, reports after the last.
    kinds = [n.kind for n in stored]
    assert kinds.index("turn") > max(i for i, n in enumerate(stored) if n.variant and n.variant.endswith("@before"))
    assert kinds[-1] == "report"


async def test_resume_skips_side_answers_already_stored() -> None:
    provider = ScriptedProvider(lambda r: "x")
    done = frozenset({side_key("coordination", "A", "number@before"), side_key("report", "B", None)})
    protocol = Protocol(
        coordination=(CoordinationQuestion("number", "PICK"),),
        coordination_phases=("before",),
        report_instruction="REPORT",
        done=done,
    )
    log = EventLog()
    await run_dialogue(settings(max_turns=1, protocol=protocol), two_agents(provider), new_path(), log)
    stored = nodes(log)
    assert [(n.kind, n.speaker) for n in stored if n.kind != "turn"] == [("coordination", "B"), ("report", "A")]


async def test_a_failed_prediction_fails_the_dialogue_with_an_error_node() -> None:
    def fail_predictions(request: ChatRequest) -> Exception | None:
        return ProviderError("boom") if request.messages[-1].content.endswith(PREDICT) else None

    provider = ScriptedProvider(fail_with=fail_predictions)
    log = EventLog()
    protocol = Protocol(prediction=PredictionProtocol(PREDICT))
    outcome = await run_dialogue(settings(max_turns=3, protocol=protocol), two_agents(provider), new_path(), log)
    assert outcome.status == "failed"
    errors = [n for n in nodes(log) if n.kind == "error"]
    assert len(errors) == 1
    assert errors[0].variant == "prediction:partner"
    assert "prediction:partner: boom" in (errors[0].error or "")
    assert not [n for n in nodes(log) if n.kind == "turn"]


async def test_stop_before_the_end_asks_no_after_questions() -> None:
    stop = anyio.Event()
    provider = ScriptedProvider()
    protocol = Protocol(coordination=(CoordinationQuestion("number", "PICK"),), report_instruction="REPORT")
    log = EventLog()

    async def stop_after_first_turn(event: object) -> None:
        await log(event)  # type: ignore[arg-type]
        if isinstance(event, NodeCompleted) and event.node.kind == "turn":
            stop.set()

    outcome = await run_dialogue(
        settings(max_turns=4, protocol=protocol), two_agents(provider), new_path(), stop_after_first_turn, stop=stop
    )
    assert outcome.reason == "stopped"
    assert not [n for n in nodes(log) if n.kind == "report" or (n.variant or "").endswith("@after")]
