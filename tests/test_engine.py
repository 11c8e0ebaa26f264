"""Engine logic with a scripted provider, on asyncio and trio."""

from __future__ import annotations

import itertools

import anyio
import pytest

from clonechat.engine.dialogue import run_dialogue
from clonechat.engine.events import DialogueEnded, Event, NodeCompleted, TokenDelta, TurnFailed, TurnStarted
from clonechat.engine.records import turn_seed
from clonechat.errors import ConfigError, ProviderError
from clonechat.providers.base import ChatRequest
from clonechat.providers.scripted import ScriptedProvider
from tests.helpers import EventLog, new_path, settings, two_agents

pytestmark = pytest.mark.anyio


async def test_agents_alternate_and_each_sees_its_own_perspective() -> None:
    provider = ScriptedProvider(lambda r: f"msg{len(r.messages)}")
    log = EventLog()
    outcome = await run_dialogue(settings(max_turns=4), two_agents(provider), new_path(), log)

    assert outcome.status == "completed"
    assert outcome.reason == "max_turns"
    assert [n.speaker for n in outcome.turns] == ["A", "B", "A", "B"]
    assert [n.turn_index for n in outcome.turns] == [1, 2, 3, 4]
    # Each node's parent is the previous node: one path through the tree.
    for parent, child in zip(outcome.path, outcome.path[1:], strict=False):
        assert child.parent_id == parent.id

    a_turn3, b_turn4 = provider.requests[2], provider.requests[3]
    # A (first speaker) sees: system, opening, own turn 1, B's turn 2.
    assert [(m.role, m.content) for m in a_turn3.messages] == [
        ("system", "system A"),
        ("user", "Begin."),
        ("assistant", outcome.turns[0].content),
        ("user", outcome.turns[1].content),
    ]
    # B never sees the opening; A's turns are user messages, its own are assistant.
    assert [(m.role, m.content) for m in b_turn4.messages] == [
        ("system", "system B"),
        ("user", outcome.turns[0].content),
        ("assistant", outcome.turns[1].content),
        ("user", outcome.turns[2].content),
    ]
    assert a_turn3.cache_key != b_turn4.cache_key


async def test_views_only_grow_by_appending() -> None:
    """Prefix caches depend on each agent's request being an extension of its last one."""
    provider = ScriptedProvider()
    outcome = await run_dialogue(settings(max_turns=6), two_agents(provider), new_path(), EventLog())
    assert outcome.status == "completed"
    by_agent: dict[str, list[ChatRequest]] = {}
    for request in provider.requests:
        by_agent.setdefault(request.cache_key, []).append(request)
    for requests in by_agent.values():
        for earlier, later in itertools.pairwise(requests):
            assert list(later.messages[: len(earlier.messages)]) == list(earlier.messages)


async def test_b_can_speak_first() -> None:
    provider = ScriptedProvider()
    outcome = await run_dialogue(settings(max_turns=2, first_speaker="B"), two_agents(provider), new_path(), EventLog())
    assert [n.speaker for n in outcome.turns] == ["B", "A"]
    assert provider.requests[0].messages[1].content == "Begin."
    assert all(m.content != "Begin." for m in provider.requests[1].messages)


async def test_events_stream_in_order() -> None:
    provider = ScriptedProvider(["one two three"])
    log = EventLog()
    await run_dialogue(settings(max_turns=1), two_agents(provider), new_path(), log)
    kinds = [type(e).__name__ for e in log.events]
    assert kinds == [
        "DialogueStarted",
        "TurnStarted",
        "TokenDelta",
        "TokenDelta",
        "TokenDelta",
        "NodeCompleted",
        "DialogueEnded",
    ]
    assert "".join(e.text for e in log.of(TokenDelta)) == "one two three"  # type: ignore[attr-defined]


async def test_stop_phrase_ends_dialogue_and_stays_in_transcript() -> None:
    provider = ScriptedProvider(["hello there", "goodbye ^C^C and more"])
    log = EventLog()
    outcome = await run_dialogue(settings(max_turns=10), two_agents(provider), new_path(), log)
    assert outcome.reason == "stop_phrase"
    assert len(outcome.turns) == 2
    assert outcome.turns[-1].content == "goodbye ^C^C"
    assert outcome.turns[-1].finish_reason == "stop_sequence"
    # The held-back stop phrase never reached the stream.
    streamed = "".join(e.text for e in log.of(TokenDelta))  # type: ignore[attr-defined]
    assert "^C" not in streamed


async def test_token_budget_stops_and_caps_max_tokens() -> None:
    provider = ScriptedProvider(["a b c d e f g h"])  # 8 "tokens" per reply
    outcome = await run_dialogue(
        settings(max_turns=10, token_budget=20), two_agents(provider, max_tokens=8), new_path(), EventLog()
    )
    assert outcome.reason == "token_budget"
    assert [n.completion_tokens for n in outcome.turns] == [8, 8, 4]
    assert provider.requests[-1].params.max_tokens == 4


async def test_cancellation_marks_interrupted_and_keeps_finished_turns() -> None:
    provider = ScriptedProvider(["w " * 50], delay=0.01)
    log = EventLog()
    with anyio.move_on_after(0.75):
        await run_dialogue(settings(max_turns=50), two_agents(provider), new_path(), log)
    ended = log.of(DialogueEnded)
    assert len(ended) == 1
    assert ended[0].status == "interrupted"  # type: ignore[attr-defined]
    assert ended[0].reason == "cancelled"  # type: ignore[attr-defined]
    completed = [e.node for e in log.of(NodeCompleted)]  # type: ignore[attr-defined]
    started = log.of(TurnStarted)
    assert len(completed) >= 1
    # The turn in flight was started but never completed: no half message recorded.
    assert len(started) == len(completed) + 1
    assert ended[0].leaf_id == completed[-1].id  # type: ignore[attr-defined]


async def test_provider_error_fails_dialogue_with_error_node() -> None:
    def fail_on_third(request: ChatRequest) -> Exception | None:
        return ProviderError("model exploded") if len(request.messages) >= 4 else None

    provider = ScriptedProvider(fail_with=fail_on_third)
    log = EventLog()
    outcome = await run_dialogue(settings(max_turns=6), two_agents(provider), new_path(), log)
    assert outcome.status == "failed"
    assert outcome.reason == "error"
    assert outcome.error == "model exploded"
    assert len(outcome.turns) == 2
    error_nodes = [e.node for e in log.of(NodeCompleted) if e.node.kind == "error"]  # type: ignore[attr-defined]
    assert len(error_nodes) == 1
    assert error_nodes[0].error == "model exploded"
    assert error_nodes[0].parent_id == outcome.turns[-1].id
    assert len(log.of(TurnFailed)) == 1


async def test_resume_from_a_path_continues_exactly() -> None:
    """Continuing from a stored path gives the same turns as an uninterrupted run."""
    full = await run_dialogue(settings(max_turns=6), two_agents(ScriptedProvider()), new_path(), EventLog())
    prefix = full.path[:4]  # opening + 3 turns
    resumed = await run_dialogue(settings(max_turns=6), two_agents(ScriptedProvider()), prefix, EventLog())
    assert [n.content for n in resumed.turns] == [n.content for n in full.turns]
    assert [n.speaker for n in resumed.turns] == [n.speaker for n in full.turns]
    assert [n.turn_index for n in resumed.turns] == [1, 2, 3, 4, 5, 6]
    assert resumed.turns[3].parent_id == prefix[-1].id


async def test_seeds_are_derived_per_turn() -> None:
    provider = ScriptedProvider()
    await run_dialogue(settings(max_turns=3, seed=42), two_agents(provider), new_path(), EventLog())
    assert [r.params.seed for r in provider.requests] == [turn_seed(42, t) for t in (1, 2, 3)]
    assert len({r.params.seed for r in provider.requests}) == 3


async def test_already_finished_path_ends_immediately() -> None:
    full = await run_dialogue(settings(max_turns=2), two_agents(ScriptedProvider()), new_path(), EventLog())
    provider = ScriptedProvider()
    again = await run_dialogue(settings(max_turns=2), two_agents(provider), full.path, EventLog())
    assert again.reason == "max_turns"
    assert provider.requests == []


async def test_resumed_path_ending_in_the_stop_phrase_takes_no_more_turns() -> None:
    """A crash between storing the stop-phrase turn and marking the dialogue ended must not
    let a resume carry on past the agent's goodbye."""
    first = await run_dialogue(
        settings(max_turns=10), two_agents(ScriptedProvider(["hi", "bye ^C^C"])), new_path(), EventLog()
    )
    assert first.reason == "stop_phrase"
    provider = ScriptedProvider()
    again = await run_dialogue(settings(max_turns=10), two_agents(provider), first.path, EventLog())
    assert again.reason == "stop_phrase"
    assert provider.requests == []


async def test_stop_event_lets_the_turn_in_flight_finish_and_starts_no_new_one() -> None:
    stop = anyio.Event()
    provider = ScriptedProvider(["w " * 20], delay=0.01)
    log = EventLog()

    async def stop_during_turn_two(event: Event) -> None:
        await log(event)
        if isinstance(event, TokenDelta) and len(log.of(TurnStarted)) == 2:
            stop.set()

    outcome = await run_dialogue(
        settings(max_turns=10), two_agents(provider), new_path(), stop_during_turn_two, stop=stop
    )
    assert (outcome.status, outcome.reason) == ("interrupted", "stopped")
    assert len(outcome.turns) == 2  # turn 2 was in flight when asked to stop: it finished
    assert len(log.of(TurnStarted)) == 2
    assert outcome.turns[-1].completion_tokens == 20  # whole, not cut short


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ConfigError, match="max turns must be at least 1"):
        settings(max_turns=0)
    with pytest.raises(ConfigError, match="token budget"):
        settings(token_budget=0)
