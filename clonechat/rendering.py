"""How a stored node is described to a reader, in words: shared by every front end.

The terminal printer (``clonechat.cli.console``, ``clonechat show``) and the TUI's transcript
both print a turn's metadata line; it is defined once, here, in a module that imports neither
front end (the TUI must not import the CLI, which brings typer, the session and the embedded
provider with it), nothing heavy, and has no side effects.
"""

from __future__ import annotations

from clonechat.engine.records import NodeRecord


def node_metadata(node: NodeRecord) -> str:
    """One dim line of per-turn facts: model, tokens, cache reuse, latency, finish reason."""
    parts: list[str] = []
    if node.model:
        parts.append(node.model)
    if node.prompt_tokens is not None:
        prompt = f"prompt {node.prompt_tokens} tok"
        if node.prompt_tokens_evaluated is not None:
            prompt += f" ({node.prompt_tokens_evaluated} evaluated, {node.prompt_tokens_cached or 0} cached)"
        parts.append(prompt)
    if node.completion_tokens is not None:
        parts.append(f"{node.completion_tokens} tok out")
    if node.latency_ms is not None:
        parts.append(f"{node.latency_ms / 1000:.2f} s")
    if node.finish_reason:
        parts.append(f"finish {node.finish_reason}")
    if node.error:
        parts.append(f"error: {node.error}")
    return " · ".join(parts)


__all__ = ["node_metadata"]
