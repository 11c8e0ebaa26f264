"""A scripted model: deterministic replies with no model behind them.

For unit tests of the engine's logic and for benchmarking the orchestration itself; never a
stand-in for a real model in a test that claims to exercise one.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence

import anyio

from clonechat.providers.base import ChatRequest, Completion, DeltaCallback, FinishReason, RetryNotice
from clonechat.providers.pricing import Prices, Usage, cost_usd
from clonechat.providers.stops import StopSequenceFilter

ReplyFunction = Callable[[ChatRequest], str]


def echo_reply(request: ChatRequest) -> str:
    """Default script: says how many messages it has seen, which seed it got and a digest of
    everything it was shown, so a lost, duplicated or reordered message anywhere upstream
    changes every later reply (what the crash and resume tests rely on)."""
    seen = sum(1 for m in request.messages if m.role != "system")
    digest = hashlib.blake2b(digest_size=4)
    for message in request.messages:
        digest.update(f"{message.role}\0{message.content}\0".encode())
    return f"reply to {seen} messages (seed {request.params.seed}, context {digest.hexdigest()})"


class ScriptedProvider:
    def __init__(
        self,
        replies: Sequence[str] | ReplyFunction = echo_reply,
        *,
        model_name: str = "scripted",
        delay: float = 0.0,
        fail_with: Callable[[ChatRequest], Exception | None] | None = None,
        prices: Prices | None = None,
    ) -> None:
        self.model_name = model_name
        #: Prices for its word counts, so budgets can be tested without a paid model.
        self.prices = prices
        self._replies = replies
        self._delay = delay
        self._fail_with = fail_with
        self.requests: list[ChatRequest] = []

    def _reply_for(self, request: ChatRequest) -> str:
        if callable(self._replies):
            return self._replies(request)
        return self._replies[(len(self.requests) - 1) % len(self._replies)]

    async def generate(
        self, request: ChatRequest, on_delta: DeltaCallback, on_retry: RetryNotice | None = None
    ) -> Completion:
        started = time.perf_counter()
        self.requests.append(request)
        if self._fail_with is not None and (error := self._fail_with(request)) is not None:
            raise error
        text = self._reply_for(request)
        all_words = re.findall(r"\S+\s*|\s+", text)
        words = all_words[: request.params.max_tokens]
        finish: FinishReason = "length" if len(words) < len(all_words) else "stop"
        stops = StopSequenceFilter(request.stop)
        out: list[str] = []
        first_token_at: float | None = None
        for word in words:
            if self._delay:
                await anyio.sleep(self._delay)
            piece = stops.feed(word)
            if piece:
                first_token_at = first_token_at or time.perf_counter()
                out.append(piece)
                await on_delta(piece)
            if stops.matched is not None:
                finish = "stop_sequence"
                break
        if stops.matched is None and (rest := stops.flush()):
            out.append(rest)
            await on_delta(rest)
        await anyio.lowlevel.checkpoint()
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        cost = None if self.prices is None else cost_usd(self.prices, Usage(prompt=prompt_tokens, output=len(words)))
        return Completion(
            text="".join(out),
            finish_reason=finish,
            model=self.model_name,
            stop_sequence=stops.matched,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(words),
            time_to_first_token=None if first_token_at is None else first_token_at - started,
            latency=time.perf_counter() - started,
            cost_usd=cost,
        )

    async def aclose(self) -> None:
        return None
