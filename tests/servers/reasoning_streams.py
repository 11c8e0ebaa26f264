"""The documented wire formats of reasoning models, for :mod:`tests.servers.fake_model`.

Each builder takes the reasoning and the answer as the pieces the server sends them in, and
returns what a real server would put on the wire: SSE events (``event:`` and ``data:`` lines,
as the documentation shows them) for a stream, a JSON body otherwise.

Sources:

* **DeepSeek** (``reasoning_content``), https://api-docs.deepseek.com/api/create-chat-completion:
  streamed deltas carry ``reasoning_content`` and ``content``, each ``null`` while the other is
  sent; with ``stream_options.include_usage`` a last chunk with empty ``choices`` carries the
  usage, ``completion_tokens_details.reasoning_tokens`` among it; ``data: [DONE]`` ends it. vLLM
  and SGLang's reasoning parsers send the same field.
* **OpenRouter** (``reasoning``), https://openrouter.ai/docs/use-cases/reasoning-tokens: deltas
  carry ``reasoning`` (``null`` when there is none) beside ``reasoning_details``; a whole
  message has ``message.reasoning``. Ollama uses the same field name.
* **Inline** ``<think>`` (llama.cpp with ``--reasoning-format none``, proxies without a
  reasoning parser): the reasoning is in ``content``, between ``<think>`` and ``</think>``; with
  a template that puts ``<think>`` in the prompt (DeepSeek-R1) only the closing tag is sent.
* **Anthropic** extended thinking, https://docs.claude.com/en/docs/build-with-claude/streaming
  and .../extended-thinking: a ``thinking`` block opens with
  ``{"type": "thinking", "thinking": "", "signature": ""}``, streams ``thinking_delta`` events,
  then one ``signature_delta`` just before its ``content_block_stop``; a ``redacted_thinking``
  block arrives whole, ``{"type": "redacted_thinking", "data": "..."}``, in its
  ``content_block_start``. Usage (``input_tokens``, ``cache_creation_input_tokens``,
  ``cache_read_input_tokens``, ``output_tokens``) is in ``message_start``; ``message_delta``'s
  usage is cumulative and is either ``output_tokens`` alone or all four (as in the documented
  web-search stream).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: What the documentation shows for a signature and for redacted data (opaque to clients).
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
REDACTED_DATA = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"
CREATED = 1_718_345_013


def data_event(payload: object) -> str:
    """One OpenAI-style SSE event: a ``data:`` line and the blank line that ends it."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def named_event(name: str, payload: dict[str, Any]) -> str:
    """One Anthropic SSE event: ``event:`` then ``data:`` (whose ``type`` repeats the name)."""
    return f"event: {name}\ndata: {json.dumps({'type': name, **payload})}\n\n"


# -- OpenAI-compatible ------------------------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None, *, model: str = "deepseek-reasoner") -> dict[str, Any]:
    return {
        "id": "1f633d8bfc032625086f14113c411638",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_a49d71b8a1",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def openai_usage(prompt: int, completion: int, reasoning: int | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage["total_tokens"] = prompt + completion
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def deepseek_events(
    reasoning: list[str], answer: list[str], *, usage: dict[str, Any] | None = None, finish: str = "stop"
) -> list[str]:
    """A DeepSeek / vLLM stream: ``reasoning_content`` deltas, then ``content`` deltas."""
    events = [data_event(_chunk({"role": "assistant", "content": None, "reasoning_content": ""}))]
    events += [data_event(_chunk({"content": None, "reasoning_content": piece})) for piece in reasoning]
    events += [data_event(_chunk({"content": piece, "reasoning_content": None})) for piece in answer]
    events.append(data_event(_chunk({"content": "", "reasoning_content": None}, finish)))
    if usage is not None:
        events.append(data_event({**_chunk({}), "choices": [], "usage": usage}))
    return [*events, data_event("[DONE]")]


def deepseek_body(reasoning: str, answer: str, *, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    message = {"role": "assistant", "content": answer, "reasoning_content": reasoning}
    return {
        "id": "1f633d8bfc032625086f14113c411638",
        "object": "chat.completion",
        "created": CREATED,
        "model": "deepseek-reasoner",
        "system_fingerprint": "fp_a49d71b8a1",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage or openai_usage(17, 9),
    }


def _openrouter_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    chunk = _chunk(delta, finish, model="anthropic/claude-sonnet-4")
    chunk["id"], chunk["provider"] = "gen-1761052928-cSHiiIJW2besxl4lmO80", "Anthropic"
    choice = chunk["choices"][0]
    choice["native_finish_reason"] = None if finish is None else "end_turn"
    return chunk


def _details(text: str) -> list[dict[str, Any]]:
    return [{"type": "reasoning.text", "text": text, "format": "anthropic-claude-v1", "index": 0}]


def openrouter_events(
    reasoning: list[str], answer: list[str], *, usage: dict[str, Any] | None = None, finish: str = "stop"
) -> list[str]:
    """An OpenRouter stream: ``reasoning`` (with ``reasoning_details``) deltas, then content."""
    events = [
        data_event(_openrouter_chunk({"role": "assistant", "content": "", "reasoning": None, "reasoning_details": []}))
    ]
    events += [
        data_event(
            _openrouter_chunk({"role": "assistant", "content": "", "reasoning": p, "reasoning_details": _details(p)})
        )
        for p in reasoning
    ]
    events += [data_event(_openrouter_chunk({"role": "assistant", "content": p, "reasoning": None})) for p in answer]
    events.append(data_event(_openrouter_chunk({"role": "assistant", "content": ""}, finish)))
    if usage is not None:
        events.append(data_event({**_openrouter_chunk({}), "choices": [], "usage": usage}))
    return [*events, data_event("[DONE]")]


def openrouter_body(reasoning: str, answer: str, *, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    message = {"role": "assistant", "content": answer, "reasoning": reasoning, "reasoning_details": _details(reasoning)}
    return {
        "id": "gen-1761052928-cSHiiIJW2besxl4lmO80",
        "provider": "Anthropic",
        "model": "anthropic/claude-sonnet-4",
        "object": "chat.completion",
        "created": CREATED,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "stop",
                "native_finish_reason": "end_turn",
            }
        ],
        "usage": usage or openai_usage(17, 9),
    }


def inline_events(content: list[str], *, usage: dict[str, Any] | None = None, finish: str = "stop") -> list[str]:
    """A llama.cpp stream whose ``content`` carries the ``<think>`` block itself."""
    events = [data_event(_chunk({"role": "assistant", "content": None}, model="qwen3"))]
    events += [data_event(_chunk({"content": piece}, model="qwen3")) for piece in content]
    events.append(data_event(_chunk({}, finish, model="qwen3")))
    if usage is not None:
        events.append(data_event({**_chunk({}, model="qwen3"), "choices": [], "usage": usage}))
    return [*events, data_event("[DONE]")]


def inline_body(content: str, *, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-think",
        "object": "chat.completion",
        "created": CREATED,
        "model": "qwen3",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage or openai_usage(17, 9),
    }


def think_content(reasoning: str, answer: str, *, opening_tag: bool = True) -> str:
    """What an inline-reasoning model writes: the block, a blank line, the answer. Without the
    opening tag (DeepSeek-R1's template puts ``<think>\\n`` in the prompt) only ``</think>`` shows."""
    return ("<think>\n" if opening_tag else "") + reasoning + "\n</think>\n\n" + answer


# -- Anthropic ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnthropicUsage:
    input_tokens: int = 12
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 5

    def wire(self, *, output_tokens: int | None = None) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
        }


@dataclass(frozen=True)
class Thinking:
    """One extended-thinking reply: thinking blocks (each as its streamed pieces, ``None`` for a
    redacted block), then the answer's pieces."""

    blocks: list[list[str] | None]
    answer: list[str]
    usage: AnthropicUsage = field(default_factory=AnthropicUsage)
    stop_reason: str = "end_turn"

    def content(self) -> list[dict[str, Any]]:
        """The blocks as a whole (non-streamed) message has them."""
        out: list[dict[str, Any]] = [
            {"type": "redacted_thinking", "data": REDACTED_DATA}
            if block is None
            else {"type": "thinking", "thinking": "".join(block), "signature": SIGNATURE}
            for block in self.blocks
        ]
        return [*out, {"type": "text", "text": "".join(self.answer)}]


def _message(content: list[dict[str, Any]], usage: dict[str, int], stop_reason: str | None) -> dict[str, Any]:
    return {
        "id": "msg_01DfGoUwMtftE8VM22axQ2Jc",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def anthropic_thinking_events(reply: Thinking, *, full_delta_usage: bool = False) -> list[str]:
    """The stream of ``reply``. Usage is in ``message_start`` (output_tokens 1 so far) and in
    ``message_delta``: output tokens alone, or with ``full_delta_usage`` all four, cumulative."""
    usage = reply.usage
    events = [named_event("message_start", {"message": _message([], usage.wire(output_tokens=1), None)})]
    for index, block in enumerate(reply.blocks):
        if block is None:
            start = {"type": "redacted_thinking", "data": REDACTED_DATA}
            events.append(named_event("content_block_start", {"index": index, "content_block": start}))
        else:
            start = {"type": "thinking", "thinking": "", "signature": ""}
            events.append(named_event("content_block_start", {"index": index, "content_block": start}))
            if index == 0:
                events.append(named_event("ping", {}))
            events += [
                named_event("content_block_delta", {"index": index, "delta": {"type": "thinking_delta", "thinking": p}})
                for p in block
            ]
            signature = {"type": "signature_delta", "signature": SIGNATURE}
            events.append(named_event("content_block_delta", {"index": index, "delta": signature}))
        events.append(named_event("content_block_stop", {"index": index}))
    text = len(reply.blocks)
    events.append(named_event("content_block_start", {"index": text, "content_block": {"type": "text", "text": ""}}))
    events += [
        named_event("content_block_delta", {"index": text, "delta": {"type": "text_delta", "text": p}})
        for p in reply.answer
    ]
    events.append(named_event("content_block_stop", {"index": text}))
    delta_usage: dict[str, int] = usage.wire() if full_delta_usage else {"output_tokens": usage.output_tokens}
    delta = {"stop_reason": reply.stop_reason, "stop_sequence": None}
    events.append(named_event("message_delta", {"delta": delta, "usage": delta_usage}))
    return [*events, named_event("message_stop", {})]


def anthropic_thinking_body(reply: Thinking) -> dict[str, Any]:
    return _message(reply.content(), reply.usage.wire(), reply.stop_reason)
