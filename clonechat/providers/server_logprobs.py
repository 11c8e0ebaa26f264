"""Surprisal on servers that return prompt log-probabilities (the ``prompt_logprobs`` model option).

:class:`ScoringOpenAICompatibleProvider` is an OpenAI-compatible model (it generates exactly like
:class:`~clonechat.providers.openai_compat.OpenAICompatibleProvider`) that can also score given
text, for the SURPRISAL scorer: ``continuation_logprob(messages, continuation)`` returns the same
quantity as :meth:`EmbeddedProvider.continuation_logprob
<clonechat.providers.embedded.EmbeddedProvider.continuation_logprob>`: the natural-log
probabilities of the continuation's tokens, summed, after the prompt a chat generation request
for ``messages`` continues from; the continuation tokenized on its own; the end-of-turn token
not counted. The option says which form the server speaks (docs/surprisal.md has the wire
formats and their sources):

``"vllm"``
    ``POST /tokenize`` with the messages (the server renders its chat template and the assistant
    header, as its chat completions do) and with the continuation alone
    (``add_special_tokens: false``), then ``POST /v1/completions`` with the token ids,
    ``prompt_logprobs: 1`` and ``max_tokens: 1``: ``choices[0].prompt_logprobs[i]`` maps token ids
    (as strings) to ``{"logprob", "rank", "decoded_token"}`` for prompt position ``i``.
``"sglang"``
    The same two ``POST /tokenize`` requests, then the native ``POST /generate`` with
    ``input_ids``, ``return_logprob: true``, ``logprob_start_len`` and ``max_new_tokens: 0``:
    ``meta_info.input_token_logprobs`` holds ``[logprob, token_id, text]`` from that position on.
``"llama-cpp"``
    llama-cpp-python's server: it renders no chat template for ``/v1/completions``, so the client
    renders the GGUF's template itself (the ``chat_template`` model option names the GGUF file; only
    its metadata and vocabulary are read), checks with ``POST /extras/tokenize`` that the server
    tokenizes the text into exactly the prompt's and the continuation's tokens, then
    ``POST /v1/completions`` with ``echo: true, logprobs: 1, max_tokens: 1``. Its echoed
    ``token_logprobs`` (llama-cpp-python 0.3.x, ``Llama._create_completion``) leave out the leading
    BOS token and every later BOS-id token, and are only right when the prompt starts with the
    BOS token: otherwise entry ``i`` is the distribution for token ``i + 1`` evaluated at token
    ``i`` (a value for neither), so such a prompt is refused rather than scored wrongly.

Nothing is truncated: input that does not fit the server's window is a :class:`ProviderError`,
as are server errors and bodies of an unexpected shape, each in one line. Retryable failures
(connection, 429, 5xx) are retried like generation requests, within the model's retry budget.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import httpx

from clonechat.errors import ConfigError, ProviderError, RetryableProviderError
from clonechat.providers.base import ChatMessage
from clonechat.providers.logprobs import ContinuationLogprob
from clonechat.providers.openai_compat import OpenAICompatibleProvider
from clonechat.providers.retry import call_with_retries

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaModel
    from llama_cpp.llama_chat_format import ChatFormatterResponse

#: The forms a server can speak (the values of the ``prompt_logprobs`` model option).
FORMS = ("llama-cpp", "vllm", "sglang")


def server_root(base_url: str) -> str:
    """The server's root URL: ``base_url`` without a trailing ``/v1`` (``/tokenize``,
    ``/generate`` and ``/extras/tokenize`` live there, beside ``/v1``)."""
    root = base_url.rstrip("/")
    return root.removesuffix("/v1")


def _messages_json(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _ints(value: object) -> list[int] | None:
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return value
    return None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


@dataclass
class _GgufChat:
    """A GGUF's chat template and vocabulary (no weights, no context): the prompt a
    llama-cpp-python server's chat completions would see for given messages, as text and tokens."""

    path: Path
    model: LlamaModel
    format: Callable[..., ChatFormatterResponse]
    bos: int
    bos_text: str
    add_bos: bool
    lock: threading.Lock

    @classmethod
    def load(cls, path: Path) -> _GgufChat:
        from clonechat.providers import llama_runtime

        llama_runtime.apply()
        import llama_cpp
        from llama_cpp import llama_chat_format
        from llama_cpp._internals import LlamaModel

        if not path.is_file():
            raise ConfigError(f"chat_template: {path} is not a file (it names the GGUF the server serves)")
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            model = LlamaModel(path_model=str(path), params=params, verbose=False)
        except ValueError as exc:
            raise ConfigError(f"chat_template: {path} cannot be read as a GGUF file ({exc})") from None
        metadata = model.metadata()
        template = metadata.get("tokenizer.chat_template")
        if not template:
            model.close()
            raise ConfigError(f"chat_template: {path.name} has no chat template in its metadata")
        bos, eos = model.token_bos(), model.token_eos()
        bos_text = model.token_get_text(bos) if bos != -1 else ""
        eos_text = model.token_get_text(eos) if eos != -1 else ""
        # As llama_cpp.Llama.__init__ chooses the server's chat format: a template it recognises
        # is rendered by its own Python formatter, any other by the template itself.
        builtin: dict[str, Callable[..., ChatFormatterResponse]] = {
            "chatml": llama_chat_format.format_chatml,
            "mistral-instruct": llama_chat_format.format_mistral_instruct,
            "llama-3": llama_chat_format.format_llama3,
        }
        guessed = llama_chat_format.guess_chat_format_from_gguf_metadata(metadata)
        if guessed is not None and guessed in builtin:
            formatter = builtin[guessed]
        else:
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template, eos_token=eos_text, bos_token=bos_text, stop_token_ids=[eos]
            )
        return cls(path, model, formatter, bos, bos_text, model.add_bos_token(), threading.Lock())

    def tokens(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        with self.lock:
            return list(self.model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def prepare(self, messages: Sequence[ChatMessage], continuation: str) -> tuple[str, list[int], list[int]]:
        """The text to send to ``/v1/completions`` and the tokens of the prompt (as the server's
        chat completions would see it) and of the continuation (on its own, markup as text)."""
        result = self.format(messages=_messages_json(messages))
        rendered: str = result.prompt
        # llama-cpp-python's chat completions tokenize with add_bos = not added_special.
        prompt = self.tokens(rendered, add_bos=not result.added_special)
        text = self.tokens(continuation, special=False)
        if self.tokens(continuation) != text:
            raise ValueError("the message contains special-token markup, which the server would read as control tokens")
        # /v1/completions prepends BOS itself when the vocabulary says so (and never otherwise).
        candidates = [rendered]
        if self.bos_text and rendered.startswith(self.bos_text):
            candidates.append(rendered[len(self.bos_text) :])
        for sent in candidates:
            if ([self.bos] if self.add_bos else []) + self.tokens(sent) == prompt:
                return sent + continuation, prompt, text
        raise ValueError("llama-cpp-python's /v1/completions cannot be given this chat prompt unchanged (BOS handling)")

    def close(self) -> None:
        self.model.close()


class ScoringOpenAICompatibleProvider(OpenAICompatibleProvider):
    """An OpenAI-compatible model whose server can also score given text."""

    def __init__(self, *, prompt_logprobs: str, chat_template: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if prompt_logprobs not in FORMS:
            raise ConfigError(f"model '{self.model_name}': prompt_logprobs must be one of {', '.join(FORMS)}")
        if prompt_logprobs == "llama-cpp" and chat_template is None:
            raise ConfigError(
                f"model '{self.model_name}': prompt_logprobs = \"llama-cpp\" needs chat_template = the path of the "
                "GGUF file the server serves (its chat template is rendered by clonechat)"
            )
        if prompt_logprobs != "llama-cpp" and chat_template is not None:
            raise ConfigError(
                f"model '{self.model_name}': chat_template is only used with prompt_logprobs = \"llama-cpp\" "
                f"(a {prompt_logprobs} server renders its own template)"
            )
        self.prompt_logprobs = prompt_logprobs
        self.chat_template = None if chat_template is None else Path(chat_template).expanduser()
        self._gguf: _GgufChat | None = None
        self._gguf_lock = threading.Lock()

    @property
    def root(self) -> str:
        return server_root(self.endpoint.base_url)

    def _fail(self, reason: str) -> ProviderError:
        return ProviderError(f"{self.label}: cannot score the message ({self.prompt_logprobs}): {reason}")

    async def continuation_logprob(self, messages: Sequence[ChatMessage], continuation: str) -> ContinuationLogprob:
        """Log-probability that the model, asked for the next assistant message after
        ``messages``, writes exactly ``continuation`` (not counting the end-of-turn token), from
        the server's prompt log-probabilities. An empty continuation scores 0 over 0 tokens
        without a request. Raises ``ProviderError`` (one line) when the server cannot score it."""
        values = await self.continuation_token_logprobs(messages, continuation)
        return ContinuationLogprob(total=math.fsum(values), tokens=len(values))

    async def continuation_token_logprobs(self, messages: Sequence[ChatMessage], continuation: str) -> list[float]:
        """The natural-log probability of each of ``continuation``'s tokens, in order (see
        :meth:`continuation_logprob`)."""
        if not continuation:
            return []
        messages = list(messages)

        async def attempt() -> list[float]:
            # Scoring requests count against the server's rate limits like generation's.
            await self.endpoint.pacer.wait()
            async with self.endpoint.limiter.slot():
                with self.endpoint.client() as client, self.transport_errors():
                    if self.prompt_logprobs == "llama-cpp":
                        values = await self._llama_cpp(client, messages, continuation)
                    else:
                        values = await self._by_token_ids(client, messages, continuation)
            self.endpoint.limiter.succeeded()
            return values

        return await call_with_retries(attempt, self.retry)

    async def _post(
        self, client: httpx.AsyncClient, path: str, body: dict[str, Any], *, at_root: bool = True
    ) -> dict[str, Any]:
        """``body`` POSTed to ``path`` at the server's root (or, ``at_root=False``, under the
        base URL); the JSON object answered, or the error its status stands for."""
        url = f"{self.root}{path}" if at_root else path.lstrip("/")
        shown = path if at_root else f"{self.endpoint.base_url.rstrip('/').removeprefix(self.root)}{path}"
        response = await client.post(url, json=body, headers=self.headers())
        self.endpoint.pacer.update(response.headers)
        if response.status_code >= 400:
            error = self._status_error(response, response.content[:2000])
            message = str(error).replace(f"{self.label}: ", f"{self.label}: POST {shown}: ", 1)
            if isinstance(error, RetryableProviderError):
                raise RetryableProviderError(message, retry_after=error.retry_after)
            raise ProviderError(message)
        try:
            data = response.json()
        except ValueError:
            raise self._fail(f"POST {shown} answered with a body that is not JSON") from None
        if not isinstance(data, dict):
            raise self._fail(f"POST {shown} answered with a JSON {type(data).__name__}, not an object")
        return data

    # -- vLLM and SGLang: the server renders the template; the client sends token ids --------

    async def _tokenize(self, client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[list[int], int | None]:
        data = await self._post(client, "/tokenize", {"model": self.model_id, **body})
        tokens = _ints(data.get("tokens"))
        if tokens is None:
            raise self._fail("POST /tokenize answered without a list of token ids in 'tokens'")
        limit = data.get("max_model_len")
        return tokens, limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None

    async def _by_token_ids(
        self, client: httpx.AsyncClient, messages: list[ChatMessage], continuation: str
    ) -> list[float]:
        chat: dict[str, Any] = {"messages": _messages_json(messages)}
        if self.prompt_logprobs == "vllm":
            chat["add_generation_prompt"] = True  # vLLM's default too; SGLang always adds it
        prompt, limit = await self._tokenize(client, chat)
        text, _ = await self._tokenize(client, {"prompt": continuation, "add_special_tokens": False})
        if not prompt or not text:
            raise self._fail("POST /tokenize answered with no tokens")
        ids = prompt + text
        room = 1 if self.prompt_logprobs == "vllm" else 0  # vLLM generates one token, SGLang none
        if limit is not None and len(ids) + room > limit:
            raise self._fail(
                f"the prompt ({len(prompt)} tokens) plus the message ({len(text)} tokens) do not fit the "
                f"context window of {limit} tokens"
            )
        if self.prompt_logprobs == "vllm":
            return await self._vllm(client, prompt, text)
        return await self._sglang(client, prompt, text)

    async def _vllm(self, client: httpx.AsyncClient, prompt: list[int], text: list[int]) -> list[float]:
        ids = prompt + text
        body = {
            "model": self.model_id,
            "prompt": ids,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": 1,
        }
        data = await self._post(client, "/completions", body, at_root=False)
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        entries = choice.get("prompt_logprobs")
        if not isinstance(entries, list) or len(entries) != len(ids):
            raise self._fail(f"POST /v1/completions answered without prompt_logprobs for the {len(ids)} tokens sent")
        values: list[float] = []
        for position in range(len(prompt), len(ids)):
            entry = entries[position]
            chosen = entry.get(str(ids[position])) if isinstance(entry, dict) else None
            value = _number(chosen.get("logprob")) if isinstance(chosen, dict) else None
            if value is None:
                raise self._fail(f"prompt_logprobs[{position}] has no logprob for token {ids[position]}")
            values.append(value)
        return values

    async def _sglang(self, client: httpx.AsyncClient, prompt: list[int], text: list[int]) -> list[float]:
        ids = prompt + text
        # One position before the message: SGLang versions differ on whether the entry at
        # logprob_start_len is returned; entries are matched to tokens from the end, by id.
        body = {
            "input_ids": ids,
            "sampling_params": {"max_new_tokens": 0, "temperature": 0.0},
            "return_logprob": True,
            "logprob_start_len": len(prompt) - 1,
        }
        data = await self._post(client, "/generate", body)
        meta = data.get("meta_info")
        entries = meta.get("input_token_logprobs") if isinstance(meta, dict) else None
        if not isinstance(entries, list) or len(entries) < len(text):
            raise self._fail("POST /generate answered without input_token_logprobs for the message's tokens")
        values: list[float] = []
        for token, entry in zip(text, entries[len(entries) - len(text) :], strict=True):
            if not (isinstance(entry, list) and len(entry) >= 2 and entry[1] == token):
                raise self._fail(f"input_token_logprobs do not match the tokens sent (expected token {token})")
            value = _number(entry[0])
            if value is None:
                raise self._fail(f"input_token_logprobs has no logprob for token {token}")
            values.append(value)
        return values

    # -- llama-cpp-python: the client renders the template; the server echoes the prompt ------

    def _load_gguf(self) -> _GgufChat:
        with self._gguf_lock:
            if self._gguf is None:
                assert self.chat_template is not None
                self._gguf = _GgufChat.load(self.chat_template)
            return self._gguf

    def _prepare_llama_cpp(
        self, messages: list[ChatMessage], continuation: str
    ) -> tuple[_GgufChat, str, list[int], list[int]]:
        gguf = self._load_gguf()
        try:
            sent, prompt, text = gguf.prepare(messages, continuation)
        except ValueError as exc:
            raise self._fail(str(exc)) from None
        return gguf, sent, prompt, text

    async def _llama_cpp(
        self, client: httpx.AsyncClient, messages: list[ChatMessage], continuation: str
    ) -> list[float]:
        gguf, sent, prompt, text = await anyio.to_thread.run_sync(self._prepare_llama_cpp, messages, continuation)
        ids = prompt + text
        data = await self._post(client, "/extras/tokenize", {"model": self.model_id, "input": sent})
        served = _ints(data.get("tokens"))
        if served is None:
            raise self._fail("POST /extras/tokenize answered without a list of token ids in 'tokens'")
        if served != ids:
            reason = (
                "a token spans the end of the prompt and the start of the message"
                if served[: len(prompt)] != prompt
                else "the server tokenizes the message differently from the GGUF's vocabulary"
            )
            raise self._fail(f"{reason}, so its tokens cannot be told apart from the prompt's")
        if ids[0] != gguf.bos:
            # llama-cpp-python 0.3.x pairs the logits of position i with token i (not i + 1)
            # unless the prompt starts with BOS: every echoed value would be wrong.
            raise self._fail(
                "the prompt does not start with the BOS token, and llama-cpp-python's echoed log-probabilities "
                "are misaligned for such prompts"
            )
        body = {
            "model": self.model_id,
            "prompt": sent,
            "echo": True,
            "logprobs": 1,
            "max_tokens": 1,
            "temperature": 0.0,
            "stream": False,
        }
        data = await self._post(client, "/completions", body, at_root=False)
        usage = data.get("usage")
        if isinstance(usage, dict) and usage.get("prompt_tokens") not in (None, len(ids)):
            raise self._fail(f"the server evaluated {usage.get('prompt_tokens')} prompt tokens, not {len(ids)}")
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        logprobs = choice.get("logprobs")
        echoed = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
        # The echoed entries: every token after the leading BOS except BOS-id tokens (skipped
        # by llama-cpp-python), then the generated token (none if it ended the turn).
        entry_of: dict[int, int] = {}
        for position in range(1, len(ids)):
            if ids[position] != gguf.bos:
                entry_of[position] = len(entry_of)
        if not isinstance(echoed, list) or len(echoed) - len(entry_of) not in (0, 1):
            count = len(echoed) if isinstance(echoed, list) else "no"
            raise self._fail(
                f"POST /v1/completions echoed {count} token log-probabilities, expected {len(entry_of)} for the "
                "prompt (is the server's logits_all on?)"
            )
        values: list[float] = []
        for position in range(len(prompt), len(ids)):
            value = _number(echoed[entry_of[position]]) if position in entry_of else None
            if value is None:
                raise self._fail(f"no echoed log-probability for token {ids[position]} at position {position}")
            values.append(value)
        return values

    async def aclose(self) -> None:
        await super().aclose()
        with self._gguf_lock:
            gguf, self._gguf = self._gguf, None
        if gguf is not None:
            gguf.close()
