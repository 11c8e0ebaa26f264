"""What the HTTP providers share: one pooled client and limiter per endpoint, retries,
status classification, and streaming with stop-sequence detection.

Stop sequences are detected here, on the client, rather than by the server: servers disagree
on whether and how they report which stop string matched, and the engine needs to know.
Closing the stream on a match ends generation on every server we know of.

Connections are kept alive across turns. httpcore returns a connection to its pool only when
the response body was read to its very end (for a chunked SSE stream: the zero-length chunk
that follows the end marker); a response closed earlier takes its connection down with it, and
the next turn pays a new TCP (and, against a hosted API, TLS) handshake. So once a stream's end
marker is read (OpenAI ``data: [DONE]``, Anthropic ``message_stop``) the rest of the body is
read and thrown away, for at most ``Endpoint.drain_timeout`` seconds: a server that never ends
the body after its end marker costs that bound and its connection, never a hung turn. The one
deliberate exception is a client-side stop-sequence match: closing the response mid-body is how
generation is stopped on the server, so that connection is discarded. Non-streamed responses
and error responses are read whole, so their connections are reused as well.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from httpx_sse import EventSource, SSEError

from clonechat.errors import ProviderError, RetryableProviderError
from clonechat.providers.base import ChatRequest, Completion, DeltaCallback, FinishReason, RetryNotice
from clonechat.providers.limits import AdaptiveLimiter
from clonechat.providers.pacing import Pacer
from clonechat.providers.pricing import Prices, Usage, cost_usd
from clonechat.providers.retry import RetryPolicy, call_with_retries, is_retryable_status, retry_after_seconds
from clonechat.providers.stops import StopSequenceFilter
from clonechat.providers.think_tags import ThinkTagSplitter
from clonechat.redaction import without_credentials


class StreamProtocolError(RetryableProviderError):
    """The server's response broke the protocol (malformed SSE or JSON, no end marker, no
    choices). Retried, since a cut connection looks the same; recorded if it persists."""


#: Longest wait, after a stream's end marker, for the rest of its body (see the module docstring).
DRAIN_TIMEOUT = 2.0

#: Connections per pooled client. httpcore's pool scans every connection for every idle one on
#: each request and response (quadratic: encode/httpcore#1035), which froze the event loop for
#: seconds with 1,000 connections in one pool; pools of 32 keep each scan trivial.
CONNECTIONS_PER_CLIENT = 32


@dataclass
class Endpoint:
    """One base URL: pooled clients and a concurrency limit shared by every model on it."""

    base_url: str
    max_connections: int = 8
    connect_timeout: float = 10.0
    #: Longest silence allowed inside a response (a hung stream fails after this).
    idle_timeout: float = 60.0
    #: Longest wait for the end of a body after the stream's end marker; past it the response
    #: is closed and its connection discarded (the turn itself is complete and kept).
    drain_timeout: float = DRAIN_TIMEOUT
    limiter: AdaptiveLimiter = field(init=False)
    #: Spaces requests by the rate-limit headers of the responses (clonechat.providers.pacing).
    pacer: Pacer = field(default_factory=Pacer, init=False)
    #: 429 responses received.
    rate_limited_responses: int = field(default=0, init=False)
    _clients: list[httpx.AsyncClient] = field(default_factory=list, init=False)
    _sizes: list[int] = field(default_factory=list, init=False)
    _in_flight: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.limiter = AdaptiveLimiter(self.max_connections)

    @property
    def paced_seconds(self) -> float:
        """Seconds requests waited for the pacer, summed over requests."""
        return self.pacer.paced_seconds

    def _open_clients(self) -> None:
        # The pools' sizes add up to exactly max_connections (not count x the rounded-up
        # share): every pool keeps up to its size alive, so rounded-up shares would let the
        # endpoint hold more open connections than it was configured for.
        total = max(1, self.max_connections)
        count = -(-total // CONNECTIONS_PER_CLIENT)
        self._sizes = [total // count + (1 if i < total % count else 0) for i in range(count)]
        self._clients = [
            httpx.AsyncClient(
                base_url=self.base_url.rstrip("/") + "/",
                timeout=httpx.Timeout(self.idle_timeout, connect=self.connect_timeout, pool=None),
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
            for size in self._sizes
        ]
        self._in_flight = [0] * count

    @contextmanager
    def client(self) -> Iterator[httpx.AsyncClient]:
        """The pooled client with the most free connections, for one request. The limiter keeps
        the total in flight within ``max_connections``, the sum of the pools' sizes, so that
        client always has a free connection and no request waits on a pool."""
        if not self._clients:
            self._open_clients()
        index = max(range(len(self._clients)), key=lambda i: self._sizes[i] - self._in_flight[i])
        self._in_flight[index] += 1
        try:
            yield self._clients[index]
        finally:
            self._in_flight[index] -= 1

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()


@dataclass
class StreamState:
    """What one attempt has produced so far."""

    started: float
    stops: StopSequenceFilter
    on_delta: DeltaCallback
    text: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    #: Prompt tokens written to the server's prompt cache (Anthropic).
    cache_written_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    #: The reasoning, apart from the text: it never passes through ``on_delta``.
    reasoning: list[str] = field(default_factory=list)
    #: Whether the server sent any reasoning (an empty trace is still a trace).
    reasoned: bool = False
    #: Splits inline ``<think>`` blocks off the text (the ``think_tags`` model option).
    think_tags: ThinkTagSplitter | None = None
    chunks: int = 0
    model: str | None = None
    #: When the stream's end marker was read: the turn's latency ends here, not after the
    #: drain of the rest of the body (which is connection housekeeping, not generation).
    ended_at: float | None = None

    def add_reasoning(self, piece: str) -> None:
        """Take reasoning text (kept apart from the message; stop sequences do not apply)."""
        self.reasoned = True
        if piece:
            self.reasoning.append(piece)

    async def add(self, piece: str) -> bool:
        """Take generated text; return False once a stop sequence matched (stop reading)."""
        if not piece:
            return True
        self.chunks += 1
        if self.think_tags is not None:
            thought, piece = self.think_tags.feed(piece)
            if self.think_tags.thought:
                self.add_reasoning(thought)
            if not piece:
                return True
        shown = self.stops.feed(piece)
        if shown:
            self.first_token_at = self.first_token_at or time.perf_counter()
            self.text.append(shown)
            await self.on_delta(shown)
        if self.stops.matched is not None:
            self.finish_reason = "stop_sequence"
            return False
        return True

    async def flush(self) -> None:
        if self.think_tags is not None and self.stops.matched is None:
            thought, tail = self.think_tags.flush()
            if self.think_tags.thought:
                self.add_reasoning(thought)
            if tail:
                shown = self.stops.feed(tail)
                if shown:
                    self.text.append(shown)
                    await self.on_delta(shown)
                if self.stops.matched is not None:
                    self.finish_reason = "stop_sequence"
                    return
        if self.stops.matched is None and (rest := self.stops.flush()):
            self.text.append(rest)
            await self.on_delta(rest)


class HttpProvider(ABC):
    """Base of the OpenAI-compatible and Anthropic providers."""

    def __init__(
        self,
        *,
        model_name: str,
        model_id: str,
        endpoint: Endpoint,
        api_key: str | None = None,
        stream: bool = True,
        retry: RetryPolicy | None = None,
        prices: Prices | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_id = model_id
        self.endpoint = endpoint
        self._api_key = api_key
        self.stream = stream
        self.retry = retry or RetryPolicy()
        self.prices = prices

    def new_state(self, request: ChatRequest, on_delta: DeltaCallback) -> StreamState:
        """The record of one attempt (a provider with inline reasoning adds its splitter)."""
        return StreamState(time.perf_counter(), StopSequenceFilter(request.stop), on_delta)

    @property
    def label(self) -> str:
        return f"model '{self.model_name}' at {without_credentials(self.endpoint.base_url)}"

    # -- subclass hooks -------------------------------------------------------------------
    path: str = ""

    @abstractmethod
    def payload(self, request: ChatRequest, stream: bool) -> dict[str, Any]: ...

    @abstractmethod
    def headers(self) -> dict[str, str]: ...

    @abstractmethod
    async def read_stream(self, events: AsyncIterator[tuple[str, str]], state: StreamState) -> bool:
        """Consume (event name, data) pairs into ``state``; raise StreamProtocolError on a
        broken stream.

        Return True once the stream's end marker was read: the caller then drains what is left
        of ``events`` so the connection goes back to the pool. Return False when reading stopped
        early at a stop sequence: the caller closes the response, which stops generation."""

    @abstractmethod
    async def read_body(self, body: dict[str, Any], state: StreamState) -> None: ...

    @abstractmethod
    def error_message(self, body: bytes) -> str: ...

    # -- shared machinery -----------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _status_error(self, response: httpx.Response, body: bytes) -> ProviderError:
        status = response.status_code
        detail = self._redact(self.error_message(body))
        message = f"{self.label}: HTTP {status}" + (f": {detail}" if detail else "")
        if is_retryable_status(status):
            if status == 429:
                self.endpoint.rate_limited_responses += 1
                self.endpoint.limiter.rate_limited()
            return RetryableProviderError(message, retry_after=retry_after_seconds(response.headers))
        return ProviderError(message)

    async def generate(
        self, request: ChatRequest, on_delta: DeltaCallback, on_retry: RetryNotice | None = None
    ) -> Completion:
        async def attempt() -> Completion:
            return await self._attempt(request, on_delta)

        return await call_with_retries(attempt, self.retry, on_retry=on_retry)

    @contextmanager
    def transport_errors(self) -> Iterator[None]:
        """A timeout or a failed connection as a retryable error in one line (key redacted)."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise RetryableProviderError(f"{self.label}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            reason = self._redact(str(exc)) or type(exc).__name__
            raise RetryableProviderError(f"{self.label}: connection failed ({reason})") from None

    async def _attempt(self, request: ChatRequest, on_delta: DeltaCallback) -> Completion:
        # Before the slot (a paced request holds none) and before the clock of the turn starts.
        await self.endpoint.pacer.wait()
        state = self.new_state(request, on_delta)
        async with self.endpoint.limiter.slot():
            with self.transport_errors():
                await self._exchange(request, state)
        self.endpoint.limiter.succeeded()
        await state.flush()
        # Servers that do not report usage while streaming send one token per chunk.
        completion_tokens = state.completion_tokens if state.completion_tokens is not None else state.chunks
        cached, written = state.cached_tokens, state.cache_written_tokens
        known = (cached or 0) + (written or 0)
        return Completion(
            text="".join(state.text),
            finish_reason=state.finish_reason or "stop",
            model=self.model_name,
            stop_sequence=state.stops.matched,
            prompt_tokens=state.prompt_tokens,
            prompt_tokens_evaluated=None
            if state.prompt_tokens is None or cached is None
            else state.prompt_tokens - cached,
            prompt_tokens_cached=cached,
            prompt_tokens_cache_written=written,
            completion_tokens=completion_tokens,
            reasoning="".join(state.reasoning) if state.reasoned else None,
            reasoning_tokens=state.reasoning_tokens,
            cost_usd=None
            if self.prices is None or state.prompt_tokens is None
            else cost_usd(
                self.prices,
                Usage(
                    prompt=max(state.prompt_tokens, known),
                    cached=cached or 0,
                    cache_written=written or 0,
                    output=completion_tokens,
                    reasoning=state.reasoning_tokens or 0,
                ),
            ),
            time_to_first_token=None if state.first_token_at is None else state.first_token_at - state.started,
            latency=(state.ended_at or time.perf_counter()) - state.started,
        )

    async def _exchange(self, request: ChatRequest, state: StreamState) -> None:
        payload = self.payload(request, self.stream)
        with self.endpoint.client() as client:
            await self._exchange_on(client, payload, state)
        output = state.completion_tokens if state.completion_tokens is not None else state.chunks
        self.endpoint.pacer.spent(state.prompt_tokens, output, payload)

    async def _exchange_on(self, client: httpx.AsyncClient, payload: dict[str, Any], state: StreamState) -> None:
        async with client.stream("POST", self.path, json=payload, headers=self.headers()) as response:
            self.endpoint.pacer.update(response.headers)  # successes and errors alike
            if response.status_code >= 400:
                raise self._status_error(response, (await response.aread())[:2000])
            if not self.stream:
                raw = await response.aread()
                await self.read_body(parse_json(raw.decode("utf-8", "replace"), self.label, "response"), state)
                return
            events = _events(EventSource(response))
            try:
                ended = await self.read_stream(events, state)
            except SSEError as exc:
                raise StreamProtocolError(f"{self.label}: malformed event stream ({exc})") from None
            if ended:
                state.ended_at = time.perf_counter()
                await _drain(events, self.endpoint.drain_timeout)
            # Otherwise a stop sequence matched: leaving this block closes the response mid-body,
            # which stops generation on the server and discards the connection.

    async def aclose(self) -> None:
        await self.endpoint.aclose()


async def _events(source: EventSource) -> AsyncIterator[tuple[str, str]]:
    async for sse in source.aiter_sse():
        yield sse.event, sse.data


async def _drain(events: AsyncIterator[tuple[str, str]], bound: float) -> None:
    """Read the rest of a stream after its end marker, so httpcore sees the body end and keeps
    the connection. ``events`` is the iterator ``read_stream`` returned from: its ``async for``
    left it suspended, not closed, and a second ``response.aiter_*()`` would raise
    StreamConsumed. Bounded by ``bound`` seconds: on expiry (or on a transport error) the response
    is closed with its body unfinished and httpcore discards the connection. The turn was
    complete at the end marker, so nothing here can fail it."""
    with anyio.move_on_after(bound):
        try:
            async for _ in events:
                pass  # anything after the end marker is not part of the turn
        except (httpx.HTTPError, httpx.StreamError, SSEError):
            pass


def parse_json(data: str, label: str, what: str = "stream") -> dict[str, Any]:
    """A JSON object from the server, or a protocol error saying where it went wrong."""
    try:
        value = json.loads(data)
    except ValueError:
        raise StreamProtocolError(f"{label}: malformed JSON in {what}: {data[:80]!r}") from None
    if not isinstance(value, dict):
        raise StreamProtocolError(f"{label}: {what} is not a JSON object: {data[:80]!r}")
    return value
