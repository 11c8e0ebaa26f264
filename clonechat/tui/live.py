"""Running one live dialogue for an interface: start, stop, and predictions scored as they land.

No Textual here: the TUI hands in a callback and gets engine events plus ``TurnScored`` (a
turn's predictions with their text scores, computed the moment the turn is stored), so the
same controller can drive any front end and is tested without a screen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from clonechat.engine.dialogue import DialogueOutcome, run_dialogue
from clonechat.engine.events import Event, NodeCompleted, fan_out
from clonechat.engine.records import NodeRecord
from clonechat.registry import ProviderPool
from clonechat.scoring.registry import get_text_scorer
from clonechat.session import DialogueRequest, PreparedDialogue, load_dialogue, prepare_dialogue
from clonechat.store.database import Database
from clonechat.store.recorder import Recorder
from clonechat.store.writer import StoreWriter, open_writer

#: Scores shown beside a prediction on screen (all text scorers are stored by `clonechat score`).
LIVE_SCORERS = ("chrf", "token_f1", "first_word", "length_bucket")


@dataclass(frozen=True)
class ScoredPrediction:
    prediction: NodeRecord
    scores: dict[str, float | None]


@dataclass(frozen=True)
class TurnScored:
    """A turn has landed: its predictions, revealed to the researcher now, with scores."""

    turn: NodeRecord
    predictions: tuple[ScoredPrediction, ...]


@dataclass(frozen=True)
class PathLoaded:
    """The conversation so far (root to the leaf the dialogue continues from), sent once before
    the engine starts, so an interface shows what is already there."""

    path: tuple[NodeRecord, ...]


UiEvent = Event | TurnScored | PathLoaded
UiSink = Callable[[UiEvent], Awaitable[None]]


def score_predictions(turn: NodeRecord, predictions: tuple[NodeRecord, ...], stop_phrase: str | None) -> TurnScored:
    scored = []
    for prediction in predictions:
        scores = {
            name: get_text_scorer(name).score(prediction.content, turn.content, stop_phrase=stop_phrase).value
            for name in LIVE_SCORERS
        }
        scored.append(ScoredPrediction(prediction, scores))
    return TurnScored(turn, tuple(scored))


@dataclass
class LiveDialogue:
    """One dialogue run from an interface. ``stop()`` is the gentle stop (the turn in flight
    finishes and is stored); cancelling the task running ``run`` abandons it."""

    db: Database
    sink: UiSink
    stopping: anyio.Event = field(default_factory=anyio.Event)
    dialogue_id: str | None = None

    def stop(self) -> None:
        self.stopping.set()

    async def start(self, request: DialogueRequest) -> DialogueOutcome:
        return await self._run(lambda writer, pool: prepare_dialogue(writer, request, pool))

    async def resume(self, dialogue_id: str, leaf_id: str | None = None) -> DialogueOutcome:
        """Continue a stored dialogue from its head, or from ``leaf_id`` (a branch). A branch
        the researcher forked continues with the overrides stored on its edit (``branching``)."""

        async def prepare(_writer: StoreWriter, pool: ProviderPool) -> PreparedDialogue:
            return load_dialogue(self.db, dialogue_id, pool, leaf_id=leaf_id)

        return await self._run(prepare)

    async def _run(
        self, prepare: Callable[[StoreWriter, ProviderPool], Awaitable[PreparedDialogue]]
    ) -> DialogueOutcome:
        self.stopping = anyio.Event()
        pool = ProviderPool()
        try:
            async with open_writer(self.db) as writer:
                prepared = await prepare(writer, pool)
                self.dialogue_id = prepared.dialogue_id
                stop_phrase = prepared.settings.stop_phrase
                await self.sink(PathLoaded(tuple(prepared.path)))

                async def forward(event: Event) -> None:
                    await self.sink(event)
                    if isinstance(event, NodeCompleted) and event.node.kind == "turn" and event.side:
                        await self.sink(score_predictions(event.node, event.side, stop_phrase))

                p = prepared
                emit = fan_out(Recorder(writer), forward)
                return await run_dialogue(p.settings, p.agents, p.path, emit, stop=self.stopping)
        finally:
            with anyio.CancelScope(shield=True):
                await pool.aclose()
