"""``clonechat run``: one live dialogue, printed as it streams and stored as it happens."""

from __future__ import annotations

import signal

import anyio
from rich.console import Console

from clonechat.cli.console import LivePrinter
from clonechat.engine.dialogue import DialogueOutcome, run_dialogue
from clonechat.engine.events import fan_out
from clonechat.registry import ProviderPool
from clonechat.session import DialogueRequest, prepare_dialogue
from clonechat.store.database import Database
from clonechat.store.recorder import Recorder
from clonechat.store.writer import open_writer


async def _cancel_on_sigint(scope: anyio.CancelScope, console: Console) -> None:
    """First Ctrl-C (or SIGTERM): stop the dialogue cleanly (finished turns are already queued for the
    store and get committed). Ctrl-C again while stopping: the default handler takes over."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            console.print("\n[yellow]stopping: finished turns are kept[/yellow]")
            scope.cancel()
            return


async def run_live(db: Database, request: DialogueRequest, console: Console) -> DialogueOutcome | None:
    """Run one dialogue to its end; ``None`` if the user interrupted it."""
    pool = ProviderPool()
    outcome: DialogueOutcome | None = None
    try:
        async with open_writer(db) as writer:
            prepared = await prepare_dialogue(writer, request, pool)
            emit = fan_out(Recorder(writer), LivePrinter(console))
            with anyio.CancelScope() as dialogue_scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_cancel_on_sigint, dialogue_scope, console)
                    outcome = await run_dialogue(prepared.settings, prepared.agents, prepared.path, emit)
                    tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await pool.aclose()
    return outcome
