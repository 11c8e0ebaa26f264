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
            written = (
                f", {node.prompt_tokens_cache_written} written to cache" if node.prompt_tokens_cache_written else ""
            )
            prompt += f" ({node.prompt_tokens_evaluated} evaluated, {node.prompt_tokens_cached or 0} cached{written})"
        parts.append(prompt)
    if node.completion_tokens is not None:
        reasoning = f" ({node.reasoning_tokens} reasoning)" if node.reasoning_tokens is not None else ""
        parts.append(f"{node.completion_tokens} tok out{reasoning}")
    if node.cost_usd is not None:
        parts.append(format_cost(node.cost_usd))
    if node.latency_ms is not None:
        parts.append(f"{node.latency_ms / 1000:.2f} s")
    if node.finish_reason:
        parts.append(f"finish {node.finish_reason}")
    if node.error:
        parts.append(f"error: {node.error}")
    return " · ".join(parts)


def format_cost(dollars: float) -> str:
    """US dollars, with the digits a per-call cost needs (``$0.00042``, ``$1.27``)."""
    return f"${dollars:.2f}" if dollars >= 1 else f"${dollars:.4f}" if dollars >= 0.001 else f"${dollars:.6f}"


def reasoning_heading(node: NodeRecord) -> str:
    """The label over a node's reasoning wherever it is shown: it is the speaker's own, and no
    other agent saw it."""
    partner = {"A": "B", "B": "A"}.get(node.speaker, "the partner")
    tokens = f" · {node.reasoning_tokens} tok" if node.reasoning_tokens is not None else ""
    return f"private reasoning of {node.speaker} (never shown to {partner} or any predictor){tokens}"


__all__ = ["format_cost", "node_metadata", "reasoning_heading"]
