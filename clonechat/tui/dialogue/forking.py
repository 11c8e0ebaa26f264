"""Forking: one message edited into a new branch, then the dialogue continued from the edit.

The fork dialog (:class:`~clonechat.tui.screens.fork.ForkScreen`) collects the edit, prefilled
with what the conversation ran with at that message (its system prompts and parameters, edits
above it included: read, not written, so a cancelled fork leaves the file alone). Saved, the
edit is stored through the writer as a sibling of the message (the original branch stays as it
was), and :class:`Forker.Forked` tells the screen, which continues the dialogue from it.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.message import Message
from textual.widget import Widget

from clonechat.branching import fork_with_edit, settings_at
from clonechat.engine.records import NodeRecord
from clonechat.read.connect import Readable
from clonechat.store.database import Database
from clonechat.tui.dialogue.live_run import GROUP
from clonechat.tui.dialogue.messages import StatusChanged
from clonechat.tui.screens.fork import ForkEdit, ForkScreen


class Forker(Widget):
    """Asks for an edit and stores it as a new branch (not drawn)."""

    DEFAULT_CSS = "Forker { display: none; }"

    class Forked(Message):
        """``fork`` (the edit, a sibling of the message edited) is stored; continue from it."""

        def __init__(self, fork: NodeRecord) -> None:
            super().__init__()
            self.fork = fork

    def __init__(self, reading: Callable[[], Readable], writer: Callable[[], Database]) -> None:
        super().__init__()
        self._reading = reading
        self._writer = writer

    def begin(self, node: NodeRecord) -> None:
        """Open the fork dialog on ``node``; saved, the edit is stored as a new branch."""
        at_node = settings_at(self._reading(), node.id)
        params = at_node["A"].params
        prompts = {agent: s.system_prompt for agent, s in at_node.items()}

        def saved(edit: ForkEdit | None) -> None:
            if edit is not None:
                # In the run's group: LiveRun.running counts it, and the screen's stop cancels it.
                self.run_worker(self._fork(node, edit), exclusive=True, group=GROUP, exit_on_error=False)

        self.app.push_screen(ForkScreen(node, params.temperature, params.max_tokens, prompts), saved)

    def cancel(self) -> None:
        self.workers.cancel_group(self, GROUP)

    async def _fork(self, node: NodeRecord, edit: ForkEdit) -> None:
        fork = await fork_with_edit(
            self._writer(), node.id, edit.content, params=edit.params, system_prompts=edit.system_prompts
        )
        changed = f"; new system prompt for {' and '.join(edit.system_prompts)}" if edit.system_prompts else ""
        self.post_message(StatusChanged(f"forked {node.id} as {fork.id}{changed}; continuing from the edit"))
        self.post_message(self.Forked(fork))
