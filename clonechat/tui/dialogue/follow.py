"""Following a dialogue another process (a batch) is writing: its turns as they are committed.

The feed (:class:`~clonechat.tui.feed.DatabaseFeed`) watches the database on its own read-only
connection (it polls an SQLite file; a PostgreSQL database notifies it of each commit); each
new turn becomes a :class:`~.messages.TurnLanded`, and a turn's predictions,
which the batch may commit just before or after it, are scored once both are in
(:class:`~.messages.PredictionsScored`). Changes of the dialogue's status go to the status line.
"""

from __future__ import annotations

from textual.widget import Widget

from clonechat.engine.records import NodeRecord
from clonechat.location import DbLocation
from clonechat.read.sides import anchor
from clonechat.tui.dialogue.messages import PredictionsScored, StatusChanged, TurnLanded
from clonechat.tui.feed import DatabaseFeed
from clonechat.tui.live import score_predictions

#: Seconds between checks for turns committed by another process to an SQLite file (the feed's
#: poll is one ``data_version`` check when nothing changed). On PostgreSQL the feed waits for
#: the writers' notifications instead, and this is only the shortest time between two reads.
WATCH_INTERVAL = 0.1


class BatchFollow(Widget):
    """Watches one stored dialogue for what other connections commit (not drawn)."""

    DEFAULT_CSS = "BatchFollow { display: none; }"

    def __init__(self) -> None:
        super().__init__()
        self.dialogue_id: str | None = None

    def follow(self, db_path: DbLocation, dialogue_id: str, stop_phrase: str | None) -> None:
        """Start following. The feed opens here, at once: open it before reading the history,
        so a turn committed in between shows up in both (and is dropped as already shown by
        the screen) rather than in neither."""
        self.dialogue_id = dialogue_id
        feed = DatabaseFeed(db_path, node_filter=[dialogue_id])
        self.run_worker(self._run(feed, stop_phrase), exclusive=True, group="feed", exit_on_error=False)

    async def _run(self, feed: DatabaseFeed, stop_phrase: str | None) -> None:
        pending: dict[str, list[NodeRecord]] = {}
        turns: dict[str, NodeRecord] = {}
        try:
            async for update in feed.watch(WATCH_INTERVAL):
                for node in update.nodes:
                    if node.kind == "prediction" and (turn := anchor(node.kind, node.parent_id, node.target_node_id)):
                        pending.setdefault(turn, []).append(node)
                    elif node.kind in ("opening", "turn"):
                        turns[node.id] = node
                        self.post_message(TurnLanded(node, live=False))
                for target in [t for t in pending if t in turns]:
                    scored = score_predictions(turns.pop(target), tuple(pending.pop(target)), stop_phrase)
                    self.post_message(PredictionsScored(scored))
                for change in update.dialogues:
                    if change.id == self.dialogue_id:
                        reason = f" ({change.stop_reason})" if change.stop_reason else ""
                        self.post_message(StatusChanged(f"dialogue {change.id} · {change.status}{reason}"))
        finally:
            feed.close()
