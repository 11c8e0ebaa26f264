"""Printing a live dialogue to the terminal: one engine-event consumer among others."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from clonechat.engine.events import (
    DialogueEnded,
    DialogueStarted,
    Event,
    NodeCompleted,
    TokenDelta,
    TurnFailed,
    TurnRetrying,
    TurnStarted,
)
from clonechat.engine.records import NodeRecord
from clonechat.rendering import node_metadata, reasoning_heading

SPEAKER_STYLE = {"A": "bold cyan", "B": "bold magenta", "researcher": "bold yellow"}


def print_reasoning(console: Console, node: NodeRecord) -> None:
    """A node's private reasoning, if it has any, marked as such (``clonechat run`` and ``show``)."""
    if node.reasoning is None:
        return
    console.print(f"[magenta]┆ {escape(reasoning_heading(node))}[/magenta]")
    for line in (node.reasoning or "(empty)").splitlines() or [""]:
        console.print(f"[magenta]┆[/magenta] [dim italic]{escape(line)}[/dim italic]")


def _one_line(node: NodeRecord, limit: int = 160) -> str:
    text = " ".join(node.content.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LivePrinter:
    """Streams tokens as they arrive, with speaker labels and a metadata line per turn."""

    def __init__(self, console: Console) -> None:
        self.console = console
        #: A failed turn's reason is an error: it goes to stderr, the transcript stays on stdout.
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)
        self._streaming = False

    async def __call__(self, event: Event) -> None:
        c = self.console
        if isinstance(event, DialogueStarted):
            note = f", continuing after turn {event.existing_turns}" if event.existing_turns else ""
            c.print(f"[dim]dialogue {event.dialogue_id} · {event.first_speaker} speaks first{note}[/dim]")
        elif isinstance(event, TurnStarted):
            style = SPEAKER_STYLE[event.speaker]
            c.print(f"\n[{style}]{event.speaker}[/{style}] [dim]turn {event.turn_index}[/dim]")
            self._streaming = True
        elif isinstance(event, TokenDelta):
            c.out(event.text, end="", highlight=False)
            c.file.flush()
        elif isinstance(event, NodeCompleted):
            node = event.node
            if node.kind == "opening":
                c.print(f"[{SPEAKER_STYLE['researcher']}]researcher[/] [dim](opening)[/dim]\n{escape(node.content)}")
            elif node.kind == "turn" and node.speaker == "researcher":
                whom = f"to {node.variant} only" if node.variant else "to both"
                c.print(f"\n[{SPEAKER_STYLE['researcher']}]researcher[/] [dim]({whom})[/dim]\n{escape(node.content)}")
            elif node.kind == "turn":
                c.print()
                # The reasoning arrives with the finished turn (it is never streamed as text).
                print_reasoning(c, node)
                c.print(f"[dim]{escape(node_metadata(node))}[/dim]")
                for prediction in event.side:
                    # Shown after the turn it predicts, for the researcher: no agent saw it.
                    who = "cross model" if prediction.variant == "cross" else prediction.speaker
                    c.print(f"[dim]  predicted by {who} ({prediction.variant}): {escape(_one_line(prediction))}[/dim]")
            elif node.kind == "coordination":
                c.print(f"[dim]coordination {node.variant} · {node.speaker}: {escape(_one_line(node))}[/dim]")
            elif node.kind == "recognition":
                c.print(f"[dim]recognition · {node.speaker} asked about a message: {escape(_one_line(node))}[/dim]")
            elif node.kind == "report":
                style = SPEAKER_STYLE[node.speaker]
                c.print(f"\n[{style}]{node.speaker}[/{style}] [dim]to the researcher[/dim]\n{escape(node.content)}")
            self._streaming = False
        elif isinstance(event, TurnRetrying):
            c.print(
                f"\n[yellow]attempt {event.attempt} failed ({escape(event.reason)}); "
                f"retrying in {event.wait:.1f} s, from the start of the turn[/yellow]"
            )
        elif isinstance(event, TurnFailed):
            if self._streaming:
                c.print()
            self.errors.print(f"[red]turn {event.turn_index} ({event.speaker}) failed: {escape(event.error)}[/red]")
        elif isinstance(event, DialogueEnded):
            if self._streaming:
                c.print()
                self._streaming = False
            style = {"completed": "green", "interrupted": "yellow", "failed": "red"}.get(event.status, "white")
            c.print(
                f"\n[{style}]dialogue {event.dialogue_id} {event.status}[/{style}] "
                f"({event.reason}) after {event.turns} turns"
            )
