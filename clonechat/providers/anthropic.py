"""Anthropic Messages API (``POST {base_url}/v1/messages``), streamed or not."""

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


class AnthropicProvider(HttpProvider):
    path = "v1/messages"

    def payload(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        p = request.params
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        payload: dict[str, Any] = {
            "model": self.model_id,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages if m.role != "system"],
            "max_tokens": p.max_tokens,
            "temperature": min(1.0, p.temperature),
            "stream": stream,
        }
        if system:
            payload["system"] = system
        if p.top_p is not None:
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
            cached = int(usage.get("cache_read_input_tokens") or 0)
            created = int(usage.get("cache_creation_input_tokens") or 0)
            state.prompt_tokens = usage["input_tokens"] + cached + created
            state.cached_tokens = cached
        if isinstance(usage.get("output_tokens"), int):
            state.completion_tokens = usage["output_tokens"]

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
            elif kind == "content_block_delta":
                delta = event.get("delta") or {}
                if delta.get("type") == "text_delta" and not await state.add(delta.get("text", "")):
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
        await state.add("".join(b.get("text", "") for b in content if b.get("type") == "text"))
        if state.finish_reason is None:
            state.finish_reason = STOP_REASONS.get(body.get("stop_reason") or "end_turn", "stop")
