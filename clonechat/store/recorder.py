"""The store's engine-event consumer: turns events into queued writes.

Token deltas are ignored (only finished nodes are stored); everything else becomes a write on
the single writer, so the store sees events in the order the engine emitted them.
"""

from __future__ import annotations

from sqlalchemy import Connection

from clonechat.engine.events import DialogueEnded, DialogueStarted, Event, NodeCompleted
from clonechat.store import writes
from clonechat.store.writer import StoreWriter


class Recorder:
    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    async def __call__(self, event: Event) -> None:
        if isinstance(event, NodeCompleted):
            self.writer.submit_nodes([event.node, *event.side])
        elif isinstance(event, DialogueStarted):
            dialogue_id = event.dialogue_id
            await self.writer.submit(
                lambda conn: writes.update_dialogue(conn, dialogue_id, status="running", stop_reason=None, error=None),
                dialogue_id=dialogue_id,
            )
        elif isinstance(event, DialogueEnded):
            ended = event
            writer = self.writer

            def end(conn: Connection) -> None:
                writes.update_dialogue(
                    conn,
                    ended.dialogue_id,
                    status=ended.status,
                    stop_reason=ended.reason,
                    error=ended.error,
                    head_node_id=ended.leaf_id,
                )
                writer.metrics.forget(ended.dialogue_id)

            await writer.submit(end, dialogue_id=ended.dialogue_id)
