"""The newer measures in the engine, with scripted in-process models, on asyncio and trio:
self-recognition (balanced items, scoring, chance, no item asked twice on resume), scheduled
interjections (placement, addressee-only views, resume) and the convergence stop (the
hand-computed turn, "mark", resume from every cut and after real SIGKILLs)."""

from __future__ import annotations

import random
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clonechat.analysis.stats import mean_ci
from clonechat.cli import app
from clonechat.engine.convergence import converged_at
from clonechat.engine.dialogue import DialogueOutcome, recognition_items, run_dialogue
from clonechat.engine.events import Event, NodeCompleted
from clonechat.engine.protocol import (
    ConvergenceRule,
    CoordinationQuestion,
    Interjection,
    PredictionProtocol,
    Protocol,
    RecognitionProtocol,
    side_key,
)
from clonechat.engine.records import NodeRecord
from clonechat.measures import MeasureOptions, RecognitionOptions
from clonechat.providers.base import ChatRequest
from clonechat.providers.scripted import ScriptedProvider, echo_reply
from clonechat.read.connect import schema_state_of
from clonechat.read.measures import recognition_results
from clonechat.registry import ProviderPool
from clonechat.scoring.recognition import RECOGNITION_SCORER, score_recognition
from clonechat.session import DialogueRequest, load_dialogue, prepare_dialogue
from clonechat.store.database import Database
from clonechat.store.recorder import Recorder
from clonechat.store.writer import open_writer
from tests.helpers import EventLog, new_path, raw_sql, settings, stored_conversations, two_agents
from tests.test_batch_crash import Lines, start

pytestmark = pytest.mark.anyio

#: What the engine tests' recognition question looks like; the real template has the same
#: ``<message>`` block and closing question (prompts/recognition/default.toml).
QUESTION_MARK = "Did you write this message"


def question(message: str) -> str:
    return f"(A private question.)\n\n<message>\n{message}\n</message>\n\n{QUESTION_MARK}, or did your partner?"


def recognition(items: int = 4, context: str = "dialogue") -> RecognitionProtocol:
    return RecognitionProtocol(question, items, context)


def shown_in(request: ChatRequest) -> str | None:
    """The message a recognition request shows, or None for any other request."""
    last = request.messages[-1].content
    if QUESTION_MARK not in last:
        return None
    found = re.search(r"<message>\n(.*?)\n</message>", last, re.DOTALL)
    assert found is not None, last
    return found.group(1)


def knows_itself(request: ChatRequest) -> str:
    """Writes echo replies, and recognises its own messages: in its own view they are the
    assistant messages."""
    shown = shown_in(request)
    if shown is None:
        return echo_reply(request)
    return "me" if shown in {m.content for m in request.messages if m.role == "assistant"} else "partner"


def guesses(seed: int) -> Callable[[ChatRequest], str]:
    """Writes echo replies, and answers a recognition question by a coin flip: a seeded RNG per
    request (seeded with the request's text too), so the answers do not depend on the order in
    which items are asked."""

    def reply(request: ChatRequest) -> str:
        if shown_in(request) is None:
            return echo_reply(request)
        seen = "\0".join(f"{m.role}:{m.content}" for m in request.messages)
        return random.Random(f"{seed}:{seen}").choice(["me", "partner"])

    return reply


def completed(log: EventLog) -> list[NodeRecord]:
    return [e.node for e in log.events if isinstance(e, NodeCompleted)]


def sides(log: EventLog, kind: str) -> list[NodeRecord]:
    return [node for node in completed(log) if node.kind == kind]


def shape(path: Sequence[NodeRecord]) -> list[tuple[str, str, str | None, int, str]]:
    return [(n.speaker, n.kind, n.variant, n.turn_index, n.content) for n in path]


def agent_turns(path: Sequence[NodeRecord]) -> list[NodeRecord]:
    return [n for n in path if n.kind == "turn" and n.speaker != "researcher"]


# -- self-recognition -----------------------------------------------------------------------


async def test_recognition_items_are_balanced_deterministic_and_agent_turns_only() -> None:
    protocol = Protocol(interjections=(Interjection(3, None, "researcher says hi"),))
    outcome = await run_dialogue(
        settings(max_turns=7, protocol=protocol), two_agents(ScriptedProvider()), new_path(), EventLog()
    )
    turns = agent_turns(outcome.path)
    assert [t.speaker for t in turns] == list("ABABABA")
    for agent, own_turns in (("A", 4), ("B", 3)):
        for items in (2, 4, 6, 8, 20):
            chosen = recognition_items(outcome.path, agent, items, 7, "D1")  # type: ignore[arg-type]
            own = [t for t in chosen if t.speaker == agent]
            partner = [t for t in chosen if t.speaker != agent]
            each = min(items // 2, own_turns, 7 - own_turns)
            assert len(own) == len(partner) == each, (agent, items)
            assert len({t.id for t in chosen}) == len(chosen)
            assert all(t in turns for t in chosen)  # never the opening, never a researcher turn
            # Deterministic for a seed: the same items in the same order.
            assert chosen == recognition_items(outcome.path, agent, items, 7, "D1")  # type: ignore[arg-type]
    orders = {tuple(t.id for t in recognition_items(outcome.path, "A", 6, seed, "D1")) for seed in range(8)}
    assert len(orders) > 1, "the order does not depend on the seed"
    # The seed decides, not the dialogue's id (a fresh ULID in each database): the same spec and
    # seed ask the same items anywhere. Without a seed, the id varies them.
    assert recognition_items(outcome.path, "A", 6, 7, "D1") == recognition_items(outcome.path, "A", 6, 7, "other")
    unseeded = {tuple(t.id for t in recognition_items(outcome.path, "A", 6, None, f"D{i}")) for i in range(8)}
    assert len(unseeded) > 1


async def test_each_agent_is_asked_about_its_items_in_order_one_request_each() -> None:
    provider = ScriptedProvider(knows_itself)
    log = EventLog()
    outcome = await run_dialogue(
        settings(max_turns=6, protocol=Protocol(recognition=recognition(4))), two_agents(provider), new_path(), log
    )
    answers = sides(log, "recognition")
    expected = [
        (agent, item.id, str(position))
        for agent in ("A", "B")
        for position, item in enumerate(recognition_items(outcome.path, agent, 4, 7, "D1"))
    ]
    assert [(n.speaker, n.target_node_id, n.variant) for n in answers] == expected
    asked = [r for r in provider.requests if shown_in(r) is not None]
    assert len(asked) == 8
    by_id = {n.id: n for n in outcome.path}
    for request, answer in zip(asked, answers, strict=True):
        # Its own view, then the question about the one message, with only the message's text.
        target = by_id[answer.target_node_id or ""]
        assert shown_in(request) == target.content
        assert request.messages[0].content == f"system {answer.speaker}"
        truth = "me" if target.speaker == answer.speaker else "partner"
        assert answer.content == truth
        assert answer.parent_id == outcome.path[-1].id


async def test_context_none_asks_with_the_system_prompt_only() -> None:
    provider = ScriptedProvider(knows_itself)
    outcome = await run_dialogue(
        settings(max_turns=4, protocol=Protocol(recognition=recognition(2, "none"))),
        two_agents(provider),
        new_path(),
        EventLog(),
    )
    asked = [r for r in provider.requests if shown_in(r) is not None]
    assert len(asked) == 4
    for request in asked:
        assert [m.role for m in request.messages] == ["system", "user"]
        shown = shown_in(request)
        assert shown is not None and request.messages[1].content == question(shown)
        assert shown in {t.content for t in outcome.turns}


async def recognition_experiment(db: Database, reply: Callable[[ChatRequest], str], dialogues: int) -> str:
    """Run ``dialogues`` dialogues of 8 turns, 8 recognition items each agent, with ``reply`` as
    the model, store them and score the answers; returns the experiment id."""
    pool = ProviderPool()
    pool.add("scripted", ScriptedProvider(reply))
    request = DialogueRequest(
        model_a="scripted",
        max_turns=8,
        experiment="recognition",
        measures=MeasureOptions(recognition=RecognitionOptions(items=8)),
    )
    async with open_writer(db) as writer:
        for seed in range(dialogues):
            prepared = await prepare_dialogue(writer, replace(request, seed=seed), pool)
            outcome = await run_dialogue(prepared.settings, prepared.agents, prepared.path, Recorder(writer))
            assert outcome.status == "completed"
    with raw_sql(db.path) as conn:
        experiment_id = str(conn.execute("SELECT id FROM experiment WHERE name = 'recognition'").scalar_one())
    assert score_recognition(db, experiment_id) == dialogues * 16
    assert score_recognition(db, experiment_id) == 0  # scored once
    return experiment_id


async def test_a_model_that_always_knows_itself_scores_one(db: Database) -> None:
    experiment_id = await recognition_experiment(db, knows_itself, 3)
    results = recognition_results(db, experiment_id, RECOGNITION_SCORER)
    assert len(results) == 3 * 16
    assert all(r.correct == 1.0 for r in results)
    assert sorted({(r.answer, r.own) for r in results}) == [("me", True), ("partner", False)]


async def test_a_model_answering_at_random_is_at_chance(db: Database) -> None:
    experiment_id = await recognition_experiment(db, guesses(1), 40)
    results = recognition_results(db, experiment_id, RECOGNITION_SCORER)
    assert len(results) == 40 * 16
    # Balanced: in every dialogue, each agent is shown as many of its own messages as of its partner's.
    for dialogue in {r.dialogue_id for r in results}:
        for agent in ("A", "B"):
            mine = [r.own for r in results if r.dialogue_id == dialogue and r.asked == agent]
            assert mine.count(True) == mine.count(False) == 4
    values = [r.correct for r in results]
    assert all(v in (0.0, 1.0) for v in values)
    estimate = mean_ci([float(v or 0) for v in values], clusters=[r.dialogue_id for r in results])
    assert estimate.clusters == 40
    assert estimate.low is not None and estimate.high is not None
    assert estimate.low < 0.5 < estimate.high, estimate
    assert estimate.high - estimate.low < 0.2  # an interval that could have excluded chance


async def test_a_resumed_dialogue_asks_no_recognition_item_twice() -> None:
    protocol = Protocol(recognition=recognition(4), report_instruction="Report, please.")
    log = EventLog()
    full = await run_dialogue(
        settings(max_turns=6, protocol=protocol), two_agents(ScriptedProvider(knows_itself)), new_path(), log
    )
    answers = sides(log, "recognition")
    assert len(answers) == 8
    reports = {side_key("report", n.speaker, None) for n in sides(log, "report")}

    def key(node: NodeRecord) -> str:
        # What the store reads back for a stored answer (clonechat.read.sides.side_answers).
        return side_key("recognition", node.speaker, node.target_node_id)

    stored_sets = [answers[:k] for k in range(len(answers) + 1)] + [answers[::2], answers[1::2]]
    for stored in stored_sets:
        again = EventLog()
        provider = ScriptedProvider(knows_itself)
        done = frozenset({key(n) for n in stored} | reports)
        outcome = await run_dialogue(
            settings(max_turns=6, protocol=replace(protocol, done=done)), two_agents(provider), full.path, again
        )
        assert outcome.status == "completed"
        missing = [n for n in answers if n not in stored]
        asked = sides(again, "recognition")
        ask = [(n.speaker, n.target_node_id, n.variant, n.content) for n in asked]
        assert ask == [(n.speaker, n.target_node_id, n.variant, n.content) for n in missing]
        assert len(provider.requests) == len(missing)  # no turn, no report, nothing else
        assert [shown_in(r) for r in provider.requests] == [
            next(t.content for t in full.path if t.id == n.target_node_id) for n in missing
        ]


async def test_a_resume_from_the_store_asks_only_the_lost_items(db: Database) -> None:
    """The keys the store reads back match the engine's: a recognition answer lost to a crash
    is asked again, the others are not."""
    pool = ProviderPool()
    pool.add("scripted", ScriptedProvider(knows_itself))
    request = DialogueRequest(
        model_a="scripted", max_turns=6, seed=3, measures=MeasureOptions(recognition=RecognitionOptions(items=4))
    )
    async with open_writer(db) as writer:
        prepared = await prepare_dialogue(writer, request, pool)
        await run_dialogue(prepared.settings, prepared.agents, prepared.path, Recorder(writer))
    query = "SELECT id, speaker, variant, target_node_id, content FROM node WHERE kind = 'recognition' ORDER BY id"
    with raw_sql(db.path) as conn:
        before = [tuple(r) for r in conn.execute(query)]
        assert len(before) == 8
        lost = [before[2][0], before[5][0], before[7][0]]
        for node_id in lost:
            conn.execute("DELETE FROM node WHERE id = :id", {"id": node_id})

    again = ScriptedProvider(knows_itself)
    pool2 = ProviderPool()
    pool2.add("scripted", again)
    resumed = load_dialogue(db, prepared.dialogue_id, pool2)
    async with open_writer(db) as writer:
        await run_dialogue(resumed.settings, resumed.agents, resumed.path, Recorder(writer))
    assert len(again.requests) == 3
    with raw_sql(db.path) as conn:
        after = [tuple(r) for r in conn.execute(query)]
    assert sorted(r[1:] for r in after) == sorted(r[1:] for r in before)


# -- interjections --------------------------------------------------------------------------

TO_B = "Researcher to B only: the sky is green."
TO_BOTH = "Researcher to both: keep going."
TO_A = "Researcher to A only: you are doing well."
INTERJECTIONS = (Interjection(2, "B", TO_B), Interjection(3, None, TO_BOTH), Interjection(5, "A", TO_A))


async def test_interjections_are_placed_before_their_agent_turn() -> None:
    log = EventLog()
    outcome = await run_dialogue(
        settings(max_turns=6, protocol=Protocol(interjections=INTERJECTIONS)),
        two_agents(ScriptedProvider()),
        new_path(),
        log,
    )
    assert (outcome.status, outcome.reason) == ("completed", "max_turns")
    assert [(n.speaker, n.variant, n.content if n.speaker == "researcher" else "") for n in outcome.path] == [
        ("researcher", None, "Begin."),  # the opening
        ("A", None, ""),
        ("researcher", "B", TO_B),
        ("B", None, ""),
        ("researcher", None, TO_BOTH),
        ("A", None, ""),
        ("B", None, ""),
        ("researcher", "A", TO_A),
        ("A", None, ""),
        ("B", None, ""),
    ]
    assert [n.kind for n in outcome.path] == ["opening", *["turn"] * 9]
    # One numbering for every turn on the path, the researcher's included; one chain of parents.
    assert [n.turn_index for n in outcome.path] == list(range(10))
    for parent, child in zip(outcome.path, outcome.path[1:], strict=False):
        assert child.parent_id == parent.id
    # Each is emitted as it is put on the path, before the turn it precedes.
    emitted = [node.id for node in completed(log)]
    assert emitted == [n.id for n in outcome.path[1:]]


async def test_max_turns_counts_agent_turns_only() -> None:
    protocol = Protocol(interjections=(Interjection(1, None, TO_BOTH), Interjection(4, "B", TO_B)))
    outcome = await run_dialogue(
        settings(max_turns=4, protocol=protocol), two_agents(ScriptedProvider()), new_path(), EventLog()
    )
    assert outcome.reason == "max_turns"
    assert [n.speaker for n in outcome.turns] == ["researcher", "A", "B", "A", "researcher", "B"]
    # An interjection before the very first turn: the first speaker still speaks first.
    assert outcome.path[1].content == TO_BOTH and outcome.path[2].speaker == "A"


def whose(request: ChatRequest) -> str:
    """The agent whose view a request is: its system prompt (``system A``/``system B``)."""
    return request.messages[0].content.removeprefix("system ")


async def test_an_interjection_is_seen_only_by_its_addressee_in_every_later_request() -> None:
    """Main turns and every side channel (self, partner and cross predictions, coordination
    after the dialogue, reports, recognition in context): the interjection reaches its addressee
    in each request made after it is put on the path, and never reaches the other agent."""
    timeline: list[tuple[str, object]] = []

    def recorded(request: ChatRequest) -> str:
        timeline.append(("request", request))
        return knows_itself(request)

    async def sink(event: Event) -> None:
        if isinstance(event, NodeCompleted) and event.node.speaker == "researcher" and event.node.kind == "turn":
            timeline.append(("interjection", event.node))

    provider = ScriptedProvider(recorded)
    protocol = Protocol(
        prediction=PredictionProtocol(
            "Predict your partner.", "Predict yourself.", cross_provider=ScriptedProvider(recorded)
        ),
        coordination=(CoordinationQuestion("number", "Pick a number."),),
        report_instruction="Report, please.",
        recognition=recognition(4),
        interjections=INTERJECTIONS,
    )
    outcome = await run_dialogue(settings(max_turns=6, protocol=protocol), two_agents(provider), new_path(), sink)
    assert outcome.status == "completed"
    requests = [r for kind, r in timeline if kind == "request"]
    # 6 turns x (3 predictions + 1) + 2 coordination phases x 2 + 2 reports + 2 x 4 recognition
    assert len(requests) == 6 * 4 + 4 + 2 + 8
    placed: set[str] = set()
    for kind, item in timeline:
        if kind == "interjection":
            assert isinstance(item, NodeRecord)
            placed.add(item.content)
            continue
        assert isinstance(item, ChatRequest)
        agent = whose(item)
        seen = "\n".join(m.content for m in item.messages)
        for text, to in ((TO_B, "B"), (TO_A, "A"), (TO_BOTH, None)):
            expected = text in placed and to in (None, agent)
            assert (text in seen) == expected, (agent, text, seen)
    assert placed == {TO_A, TO_B, TO_BOTH}


async def test_resume_from_any_cut_places_each_interjection_once() -> None:
    """Two interjections before one turn (to each agent); a crash may cut the path between
    them, right after them, or anywhere else: the resumed dialogue is the uninterrupted one."""
    protocol = Protocol(
        interjections=(Interjection(3, "A", TO_A), Interjection(3, "B", TO_B), Interjection(5, None, TO_BOTH))
    )
    full = await run_dialogue(
        settings(max_turns=6, protocol=protocol), two_agents(ScriptedProvider()), new_path(), EventLog()
    )
    researcher = [n.turn_index for n in full.path if n.speaker == "researcher" and n.kind == "turn"]
    assert researcher == [3, 4, 7]
    for cut in range(1, len(full.path) + 1):
        prefix = full.path[:cut]
        resumed = await run_dialogue(
            settings(max_turns=6, protocol=protocol), two_agents(ScriptedProvider()), prefix, EventLog()
        )
        assert shape(resumed.path) == shape(full.path), f"cut after {cut} nodes"
        assert [n.id for n in resumed.path[:cut]] == [n.id for n in prefix]
        assert resumed.reason == "max_turns"


# -- convergence ----------------------------------------------------------------------------

OPENERS = {"system A": "apple banana cherry", "system B": "delta echo foxtrot"}


def parrot(request: ChatRequest) -> str:
    """Each agent's first message is its own; after that it repeats its partner's latest
    message and adds "indeed"."""
    if not any(m.role == "assistant" for m in request.messages):
        return OPENERS[request.messages[0].content]
    return request.messages[-1].content + " indeed"


# overlap_partner of the parrots' turns, by hand (Jaccard of word sets with the partner's latest):
#   1 A "apple banana cherry"                    None (the partner has not spoken)
#   2 B "delta echo foxtrot"                     0 / 6 = 0
#   3 A "delta echo foxtrot indeed"              3 / 4 = 0.75
#   4 B "delta echo foxtrot indeed indeed"       4 / 4 = 1
#   5 A, 6 B, ...                                1
@pytest.mark.parametrize(("threshold", "turns", "stops_after"), [(0.75, 3, 5), (0.8, 3, 6), (0.8, 1, 4), (1.0, 2, 5)])
async def test_a_parroting_pair_converges_at_the_hand_computed_turn(
    threshold: float, turns: int, stops_after: int
) -> None:
    rule = ConvergenceRule("overlap_partner", threshold, turns)
    outcome = await run_dialogue(
        settings(max_turns=10, protocol=Protocol(convergence=rule)),
        two_agents(ScriptedProvider(parrot)),
        new_path(),
        EventLog(),
    )
    assert (outcome.status, outcome.reason) == ("completed", "converged")
    assert len(agent_turns(outcome.path)) == stops_after
    assert agent_turns(outcome.path)[2].content == "delta echo foxtrot indeed"
    assert converged_at(rule, outcome.path) == stops_after


async def test_mark_lets_the_dialogue_run_on() -> None:
    rule = ConvergenceRule("overlap_partner", 0.75, 3, stop=False)
    outcome = await run_dialogue(
        settings(max_turns=10, protocol=Protocol(convergence=rule)),
        two_agents(ScriptedProvider(parrot)),
        new_path(),
        EventLog(),
    )
    assert outcome.reason == "max_turns"
    assert len(agent_turns(outcome.path)) == 10
    assert converged_at(rule, outcome.path) == 5  # where the report marks it


async def test_researcher_turns_do_not_break_a_streak() -> None:
    """An interjection between turns 4 and 5 (to B, who does not speak again before the stop):
    the streak runs through it, and through its replay when resuming right after it."""
    rule = ConvergenceRule("overlap_partner", 0.75, 3)
    protocol = Protocol(convergence=rule, interjections=(Interjection(5, "B", TO_B),))
    outcome = await run_dialogue(
        settings(max_turns=10, protocol=protocol), two_agents(ScriptedProvider(parrot)), new_path(), EventLog()
    )
    assert outcome.reason == "converged"
    assert [n.speaker for n in outcome.turns] == ["A", "B", "A", "B", "researcher", "A"]
    resumed = await run_dialogue(
        settings(max_turns=10, protocol=protocol), two_agents(ScriptedProvider(parrot)), outcome.path[:6], EventLog()
    )
    assert (resumed.reason, shape(resumed.path)) == ("converged", shape(outcome.path))


async def crash_reference(protocol: Protocol) -> DialogueOutcome:
    return await run_dialogue(
        settings(max_turns=12, protocol=protocol), two_agents(ScriptedProvider(parrot)), new_path(), EventLog()
    )


@pytest.mark.parametrize("stop", [True, False], ids=["stop", "mark"])
async def test_resume_after_a_crash_at_any_point_stops_where_an_uninterrupted_run_does(stop: bool) -> None:
    protocol = Protocol(
        convergence=ConvergenceRule("overlap_partner", 0.75, 3, stop),
        interjections=(Interjection(2, "A", TO_A), Interjection(4, None, TO_BOTH)),
    )
    full = await crash_reference(protocol)
    assert full.reason == ("converged" if stop else "max_turns")
    if stop:
        assert len(agent_turns(full.path)) < 12
    for cut in range(1, len(full.path) + 1):
        provider = ScriptedProvider(parrot)
        resumed = await run_dialogue(
            settings(max_turns=12, protocol=protocol), two_agents(provider), full.path[:cut], EventLog()
        )
        assert (resumed.status, resumed.reason) == (full.status, full.reason), f"cut after {cut} nodes"
        assert shape(resumed.path) == shape(full.path), f"cut after {cut} nodes"
        assert len(provider.requests) == len(agent_turns(full.path[cut:]))


CRASH_SPEC = """\
name = "converge-crash"
replicates = 2
max_turns = 10
seed = 5
concurrency = 2
model_a = "scripted"

[params]
max_tokens = 40

[recognition]
items = 4

[[interjections]]
at = 3
template = "check-in"
to = "B"

# The scripted model's replies share 5 of 11 words with the partner's latest (0.45), and 6 of
# 10 (0.6) on the second speaker's turns: "stop" converges at turn 4, "early" at turn 2.
[[conditions]]
name = "stop"
template = "clone-aware"
convergence = { threshold = 0.45, turns = 3 }

[[conditions]]
name = "mark"
template = "clone-aware"
convergence = { threshold = 0.45, turns = 3, action = "mark" }

[[conditions]]
name = "early"
template = "no-frame"
convergence = { threshold = 0.5, turns = 1 }
"""
KILLS = 3
REPLICATES = 2


def node_rows(db: Path) -> int:
    if schema_state_of(db) in (None, (0, False)):
        return 0
    with raw_sql(db) as conn:
        return int(conn.execute("SELECT count(*) FROM node WHERE kind != 'opening'").scalar_one())


def stored_counts(db: Path) -> dict[str, int]:
    with raw_sql(db) as conn:
        rows = conn.execute("SELECT kind, count(*) FROM node GROUP BY kind").fetchall()
    return {str(kind): int(n) for kind, n in rows}


def endings(db: Path) -> dict[tuple[str, int], tuple[str, str | None]]:
    with raw_sql(db) as conn:
        rows = conn.execute(
            "SELECT c.name, d.replicate, d.status, d.stop_reason FROM dialogue d "
            "JOIN condition c ON c.id = d.condition_id"
        ).fetchall()
    return {(c, r): (s, why) for c, r, s, why in rows}


def recognition_answers(db: Path) -> list[tuple[str, int, str, str, str, str]]:
    with raw_sql(db) as conn:
        rows = conn.execute(
            "SELECT c.name, d.replicate, n.speaker, n.variant, t.content, n.content FROM node n "
            "JOIN node t ON t.id = n.target_node_id JOIN dialogue d ON d.id = n.dialogue_id "
            "JOIN condition c ON c.id = d.condition_id WHERE n.kind = 'recognition'"
        ).fetchall()
    return sorted((str(c), int(r), str(s), str(v), str(t), str(a)) for c, r, s, v, t, a in rows)


def test_sigkilled_batch_with_convergence_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    """A batch with convergence stops, an interjection and recognition questions, SIGKILLed at
    random moments after it has stored something new and resumed each time, ends with the same
    turns, stop reasons and recognition answers as an uninterrupted run."""
    spec, db = tmp_path / "converge.toml", tmp_path / "crashed.db"
    spec.write_text(CRASH_SPEC)
    rng = random.Random(20261202)
    kills = runs = 0
    progress: list[dict[str, int]] = []
    while kills < KILLS:
        runs += 1
        assert runs < KILLS * 3, "the batch keeps finishing before it can be killed"
        before = node_rows(db)
        proc = start(spec, db)
        lines = Lines(proc)
        assert lines.ready.wait(60), "".join(lines.text)
        deadline = time.monotonic() + 120
        while node_rows(db) <= before and proc.poll() is None:
            assert time.monotonic() < deadline, "the resumed batch stored nothing"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        lines.join()
        if proc.returncode == 0:
            break  # finished before the kill
        progress.append(stored_counts(db))
    final = start(spec, db)
    out, _ = final.communicate(timeout=120)
    assert final.returncode == 0, out

    clean = tmp_path / "clean.db"
    result = CliRunner().invoke(app, ["batch", str(spec), "--db", str(clean)])
    assert result.exit_code == 0, result.output
    assert kills >= 2, f"only {kills} kills landed before the batch finished"
    reasons = endings(clean)
    expected = {"stop": ("converged", 4), "mark": ("max_turns", 10), "early": ("converged", 2)}
    replicates = range(1, REPLICATES + 1)
    assert reasons == {(c, r): ("completed", why) for c, (why, _) in expected.items() for r in replicates}
    conversations = stored_conversations(clean)
    agent_counts = {(c, r): sum(1 for s, _, _ in path if s in "AB") for (_, c, r), path in conversations.items()}
    assert agent_counts == {(c, r): n for c, (_, n) in expected.items() for r in replicates}
    assert stored_conversations(db) == conversations
    assert endings(db) == reasons
    assert recognition_answers(db) == recognition_answers(clean)
    assert len(recognition_answers(clean)) == REPLICATES * (8 + 8 + 4)
    with raw_sql(db) as conn:
        # Nothing stored twice off the path either: one interjection per dialogue that reached turn 3.
        assert (
            conn.execute("SELECT count(*) FROM node WHERE kind = 'turn' AND speaker = 'researcher'").scalar_one()
            == REPLICATES * 2
        )
    print(f"{kills} kills in {runs} runs; stored after each kill: {progress}")
