"""Anthropic Messages API (``POST {base_url}/v1/messages``), streamed or not.

**Prompt caching** (on unless the model option ``prompt_caching = false``): the system prompt
and the last message of the history carry ``cache_control: {"type": "ephemeral"}``
breakpoints, two of the four Anthropic allows. A dialogue's history only grows, so each turn's
prefix is the previous turn's plus two messages, and the server finds the previous breakpoint
by its own look-back: input is billed at the cache-read rate for all but the newest messages.
Prompts shorter than the model's minimum cacheable length are simply not cached.

**Extended thinking** (``thinking = { budget_tokens = N }``): sent as
``{"type": "enabled", "budget_tokens": N}``, with no temperature (the API allows only 1, which
the registry checks up front). ``thinking`` blocks stream as ``thinking_delta`` and
``signature_delta`` events; their text becomes the node's reasoning, never its message.
A ``redacted_thinking`` block (encrypted by Anthropic's safety systems) is recorded in the
trace as ``[redacted thinking]``. Signatures are not kept: clonechat never sends a thinking
block back (earlier turns' thinking is not part of any agent's view), which is what they are
for. ``max_tokens`` counts thinking and answer together; a request whose ``max_tokens`` is not
above the budget (the short answers of the side channels) is sent with budget + its own, so
thinking cannot leave it no room to answer. The API does not report thinking tokens apart
from output tokens, so ``reasoning_tokens`` stays unknown.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from clonechat.errors import ProviderError, RetryableProviderError
from clonechat.providers.base import ChatRequest, FinishReason
from clonechat.providers.http import HttpProvider, StreamProtocolError, StreamState, parse_json

API_VERSION = "2023-06-01"
STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "max_tokens": "length",
    "stop_sequence": "stop_sequence",
    "refusal": "stop",
}
RETRYABLE_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})


#: The breakpoint that marks a block for prompt caching (the default five-minute cache).
CACHE_CONTROL: dict[str, str] = {"type": "ephemeral"}
#: How a redacted thinking block appears in the stored trace.
REDACTED_THINKING = "[redacted thinking]"


class AnthropicProvider(HttpProvider):
    path = "v1/messages"

    def __init__(self, *, thinking_budget: int | None = None, prompt_caching: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.thinking_budget = thinking_budget
        self.prompt_caching = prompt_caching

    def payload(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        p = request.params
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        messages: list[dict[str, Any]] = [
            {"role": m.role, "content": m.content} for m in request.messages if m.role != "system"
        ]
        payload: dict[str, Any] = {"model": self.model_id, "messages": messages, "max_tokens": p.max_tokens}
        if self.thinking_budget is None:
            payload["temperature"] = min(1.0, p.temperature)
        else:
            payload["thinking"] = {"type": "enabled", "budget_tokens": self.thinking_budget}
            if p.max_tokens <= self.thinking_budget:
                payload["max_tokens"] = self.thinking_budget + p.max_tokens
        payload["stream"] = stream
        if self.prompt_caching:
            if system:
                payload["system"] = [{"type": "text", "text": system, "cache_control": CACHE_CONTROL}]
            if messages:
                last = messages[-1]
                last["content"] = [{"type": "text", "text": last["content"], "cache_control": CACHE_CONTROL}]
        elif system:
            payload["system"] = system
        if p.top_p is not None and self.thinking_budget is None:
            payload["top_p"] = p.top_p
        return payload

    def headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def error_message(self, body: bytes) -> str:
        try:
            error = json.loads(body).get("error", {})
            return str(error.get("message") or error.get("type") or "")[:300]
        except (ValueError, AttributeError):
            return body.decode("utf-8", "replace").strip()[:300]

    def _usage(self, usage: object, state: StreamState) -> None:
        if not isinstance(usage, dict):
            return
        if isinstance(usage.get("input_tokens"), int):
            # message_delta's cache counts are nullable (and some compatible servers leave them
            # out): a count not sent keeps what message_start said, else it is 0.
            cached, created = usage.get("cache_read_input_tokens"), usage.get("cache_creation_input_tokens")
            state.cached_tokens = cached if isinstance(cached, int) else state.cached_tokens or 0
            state.cache_written_tokens = created if isinstance(created, int) else state.cache_written_tokens or 0
            state.prompt_tokens = usage["input_tokens"] + state.cached_tokens + state.cache_written_tokens
        if isinstance(usage.get("output_tokens"), int):
            state.completion_tokens = usage["output_tokens"]

    @staticmethod
    def _block_start(block: dict[str, Any], state: StreamState) -> None:
        """A thinking block's opening text (whole, when not streamed); a redacted one's marker."""
        if block.get("type") == "thinking":
            if state.reasoning:
                state.add_reasoning("\n\n")
            state.add_reasoning(str(block.get("thinking") or ""))
        elif block.get("type") == "redacted_thinking":
            state.add_reasoning(("\n\n" if state.reasoning else "") + REDACTED_THINKING)

    def _error_event(self, event: dict[str, Any]) -> ProviderError:
        error = event.get("error") or {}
        kind = str(error.get("type", "error"))
        message = f"{self.label}: {kind}: {error.get('message', '')}".rstrip(": ")
        return RetryableProviderError(message) if kind in RETRYABLE_ERRORS else ProviderError(message)

    async def read_stream(self, events: AsyncIterator[tuple[str, str]], state: StreamState) -> bool:
        async for event_name, data in events:
            if event_name == "ping" or not data:
                continue
            event = parse_json(data, self.label)
            kind = event.get("type", event_name)
            if kind == "message_start":
                message = event.get("message") or {}
                self._usage(message.get("usage"), state)
            elif kind == "content_block_start":
                self._block_start(event.get("content_block") or {}, state)
            elif kind == "content_block_delta":
                delta = event.get("delta") or {}
                if delta.get("type") == "thinking_delta":
                    state.add_reasoning(str(delta.get("thinking", "")))
                elif delta.get("type") == "text_delta" and not await state.add(delta.get("text", "")):
                    return False  # stop sequence: closing the response ends generation
            elif kind == "message_delta":
                reason = (event.get("delta") or {}).get("stop_reason")
                if reason:
                    state.finish_reason = STOP_REASONS.get(reason, "stop")
                self._usage(event.get("usage"), state)
            elif kind == "message_stop":
                return True  # the end marker: the caller drains the body to keep the connection
            elif kind == "error":
                raise self._error_event(event)
        raise StreamProtocolError(f"{self.label}: stream ended before message_stop")

    async def read_body(self, body: dict[str, Any], state: StreamState) -> None:
        if body.get("type") == "error":
            raise self._error_event(body)
        content = body.get("content")
        if not isinstance(content, list):
            raise StreamProtocolError(f"{self.label}: response has no content")
        self._usage(body.get("usage"), state)
        for block in content:
            if isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking"):
                self._block_start(block, state)
        await state.add("".join(b.get("text", "") for b in content if b.get("type") == "text"))
        if state.finish_reason is None:
            state.finish_reason = STOP_REASONS.get(body.get("stop_reason") or "end_turn", "stop")
