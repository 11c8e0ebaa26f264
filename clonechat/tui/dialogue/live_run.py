"""A dialogue run in this process, for the dialogue screen: start, pause, stop, continue.

The engine runs in a worker on Textual's event loop (:class:`~clonechat.tui.live.LiveDialogue`)
and each of its events becomes a message to the screen: the path it continues, the turn being
written and its tokens so far, each finished turn, the predictions scored as a turn lands, and
the end. What the status line says about the run is decided here, since only the run knows
whether it was paused or stopped.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.message import Message
from textual.widget import Widget

from clonechat.engine.events import DialogueEnded, NodeCompleted, TokenDelta, TurnStarted
from clonechat.engine.records import NodeRecord
from clonechat.session import DialogueRequest
from clonechat.store.database import Database
from clonechat.tui.dialogue.messages import PredictionsScored, StatusChanged, TurnLanded
from clonechat.tui.live import LiveDialogue, PathLoaded, TurnScored, UiEvent

#: The worker group of whatever runs the dialogue (:attr:`LiveRun.running` looks for it).
GROUP = "dialogue"


class LiveRun(Widget):
    """Runs one dialogue at a time (not drawn: it is the screen's link to the engine)."""

    DEFAULT_CSS = "LiveRun { display: none; }"

    class PathShown(Message):
        """The conversation the run continues, root to leaf (sent before the first turn)."""

        def __init__(self, path: tuple[NodeRecord, ...]) -> None:
            super().__init__()
            self.path = path

    class Streaming(Message):
        """The turn being written, as far as it got (empty when the speaker has just begun)."""

        def __init__(self, dialogue_id: str, speaker: str, text: str) -> None:
            super().__init__()
            self.dialogue_id = dialogue_id
            self.speaker = speaker
            self.text = text

    class Ended(Message):
        """The run is over (finished, paused, stopped or failed): no turn is being written."""

    def __init__(self, writer: Callable[[], Database]) -> None:
        super().__init__()
        self._writer = writer
        self.live: LiveDialogue | None = None
        #: The tokens of the turn being written so far.
        self.stream = ""
        #: Set by pause: the dialogue stops after the turn in flight and ``p`` continues it.
        self.paused = False

    def start(self, request: DialogueRequest) -> None:
        """Run a new dialogue."""
        self.live = LiveDialogue(self._writer(), self._on_event)
        self.post_message(StatusChanged("starting…"))
        self.run_worker(self.live.start(request), exclusive=True, group=GROUP, exit_on_error=False)

    def resume(self, dialogue_id: str, leaf_id: str | None) -> None:
        """Continue a stored dialogue from ``leaf_id`` (a branch; ``None``: its head)."""
        self.paused = False
        self.live = LiveDialogue(self._writer(), self._on_event)
        work = self.live.resume(dialogue_id, leaf_id=leaf_id)
        self.run_worker(work, exclusive=True, group=GROUP, exit_on_error=False)

    @property
    def running(self) -> bool:
        """Whether a dialogue is being run (or a fork stored: it runs in the same group)."""
        return any(w.group == GROUP and w.is_running for w in self.workers)

    def continue_from(self, dialogue_id: str | None, leaf_id: str | None) -> None:
        """Continue the branch ending at ``leaf_id``, unless a run is going already."""
        if dialogue_id is None:
            return
        if self.running:
            self.notify("the dialogue is already running", timeout=2)
            return
        self.resume(dialogue_id, leaf_id)

    def toggle_pause(self, dialogue_id: str | None, leaf_id: str | None) -> None:
        """Pause (the turn being written finishes and is stored, no new turn starts); pressed
        again, continue the branch ending at ``leaf_id``. Nothing is lost either way."""
        if self.running and self.live is not None:
            self.live.stop()
            self.paused = True
            self.post_message(StatusChanged("pausing after this turn…"))
        elif self.paused:
            self.continue_from(dialogue_id, leaf_id)

    def cancel(self) -> None:
        """Stop now: the turn being written is abandoned (never stored, as a crash would
        leave it); the engine records the dialogue as interrupted."""
        self.workers.cancel_group(self, GROUP)
        self.post_message(self.Ended())
        self.post_message(StatusChanged("stopped: the turn being written was discarded"))

    async def _on_event(self, event: UiEvent) -> None:
        """The engine's sink: each event the screen shows, as a message to it."""
        if isinstance(event, PathLoaded):
            self.post_message(self.PathShown(event.path))
        elif isinstance(event, TurnStarted):
            self.stream = ""
            self.post_message(self.Streaming(event.dialogue_id, event.speaker, ""))
            self.post_message(StatusChanged(f"{event.speaker} is writing turn {event.turn_index} · {event.model}"))
        elif isinstance(event, TokenDelta):
            self.stream += event.text
            self.post_message(self.Streaming(event.dialogue_id, event.speaker, self.stream))
        elif isinstance(event, NodeCompleted) and event.node.kind in ("opening", "turn"):
            self.post_message(TurnLanded(event.node, live=True))
        elif isinstance(event, TurnScored):
            self.post_message(PredictionsScored(event))
        elif isinstance(event, DialogueEnded):
            self.post_message(self.Ended())
            if self.paused and event.reason == "stopped":
                self.post_message(StatusChanged(f"paused after {event.turns} turns · p or c continues"))
            else:
                self.paused = False
                self.post_message(
                    StatusChanged(
                        f"dialogue {event.dialogue_id} {event.status} ({event.reason}) after {event.turns} turns"
                    )
                )
