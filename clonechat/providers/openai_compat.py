"""OpenAI-compatible chat completions: vLLM, SGLang, llama.cpp server, Ollama, OpenAI,
OpenRouter, ... (``POST {base_url}/chat/completions``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from clonechat.providers.base import ChatRequest, DeltaCallback, FinishReason
from clonechat.providers.http import HttpProvider, StreamProtocolError, StreamState, parse_json
from clonechat.providers.think_tags import ThinkTagSplitter

FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "eos": "stop"}


#: Where servers put reasoning, in a delta or a message: vLLM, SGLang and DeepSeek send
#: ``reasoning_content``; OpenRouter and Ollama ``reasoning``.
REASONING_FIELDS = ("reasoning_content", "reasoning")


def reasoning_of(part: dict[str, Any]) -> str | None:
    """The reasoning text in a delta or message, if the server sent any."""
    for key in REASONING_FIELDS:
        value = part.get(key)
        if isinstance(value, str):
            return value
    return None


class OpenAICompatibleProvider(HttpProvider):
    path = "chat/completions"
    #: Ask for a usage chunk at the end of a stream (``stream_options.include_usage``).
    stream_usage = True

    def __init__(self, *, reasoning_effort: str | None = None, think_tags: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reasoning_effort = reasoning_effort
        self.think_tags = think_tags

    def new_state(self, request: ChatRequest, on_delta: DeltaCallback) -> StreamState:
        state = super().new_state(request, on_delta)
        if self.think_tags:
            state.think_tags = ThinkTagSplitter()
        return state

    def payload(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        p = request.params
        payload: dict[str, Any] = {
            "model": self.model_id,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "stream": stream,
        }
        if p.top_p is not None:
            payload["top_p"] = p.top_p
        if p.seed is not None:
            payload["seed"] = p.seed
        if self.reasoning_effort is not None:
            payload["reasoning_effort"] = self.reasoning_effort
        if stream and self.stream_usage:
            payload["stream_options"] = {"include_usage": True}
        return payload

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def error_message(self, body: bytes) -> str:
        try:
            data = json.loads(body)
            error = data.get("error", data) if isinstance(data, dict) else data
            message = error.get("message") if isinstance(error, dict) else error
            return str(message or "")[:300]
        except ValueError:
            return body.decode("utf-8", "replace").strip()[:300]

    def _usage(self, usage: object, state: StreamState) -> None:
        if not isinstance(usage, dict):
            return
        state.prompt_tokens = usage.get("prompt_tokens", state.prompt_tokens)
        state.completion_tokens = usage.get("completion_tokens", state.completion_tokens)
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            state.cached_tokens = details["cached_tokens"]
        output = usage.get("completion_tokens_details")
        if isinstance(output, dict) and isinstance(output.get("reasoning_tokens"), int):
            state.reasoning_tokens = output["reasoning_tokens"]

    async def read_stream(self, events: AsyncIterator[tuple[str, str]], state: StreamState) -> bool:
        saw_choice = False
        async for _event, data in events:
            if data.strip() == "[DONE]":
                if not saw_choice:
                    raise StreamProtocolError(f"{self.label}: stream had no choices")
                return True  # the end marker: the caller drains the body to keep the connection
            chunk = parse_json(data, self.label)
            if "error" in chunk:
                raise StreamProtocolError(f"{self.label}: error in stream: {self.error_message(data.encode())}")
            self._usage(chunk.get("usage"), state)
            choices = chunk.get("choices")
            if not isinstance(choices, list):
                raise StreamProtocolError(f"{self.label}: stream chunk without 'choices'")
            if not choices:
                continue  # the usage-only chunk at the end of a stream
            saw_choice = True
            choice = choices[0]
            delta = choice.get("delta") or {}
            if (thought := reasoning_of(delta)) is not None:
                state.add_reasoning(thought)
            content = delta.get("content") or ""
            if not await state.add(content):
                return False  # stop sequence: closing the response ends generation
            if reason := choice.get("finish_reason"):
                state.finish_reason = FINISH_REASONS.get(reason, "stop")
        raise StreamProtocolError(f"{self.label}: stream ended before [DONE]")

    async def read_body(self, body: dict[str, Any], state: StreamState) -> None:
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise StreamProtocolError(f"{self.label}: response has no choices")
        message = choices[0].get("message") or {}
        self._usage(body.get("usage"), state)
        if (thought := reasoning_of(message)) is not None:
            state.add_reasoning(thought)
        await state.add(message.get("content") or "")
        if state.finish_reason is None:
            state.finish_reason = FINISH_REASONS.get(choices[0].get("finish_reason") or "stop", "stop")
