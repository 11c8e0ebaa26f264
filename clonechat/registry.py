"""Which models clonechat can talk to, by name, and one shared provider per model.

Built in: ``local`` (the embedded SmolLM2) and ``scripted`` (deterministic canned replies, for
tests and orchestration benchmarks only). More come from TOML files, merged in this order (a
later file overrides a model of the same name):

1. ``~/.config/clonechat/models.toml`` (user-level)
2. ``models.toml`` in the current directory (project-level)
3. the file named by ``$CLONECHAT_MODELS`` or ``--models-file``

An entry::

    [models.llama-8b]
    provider = "openai-compatible"        # or "anthropic", "local"
    base_url = "http://127.0.0.1:8000/v1"
    model = "meta-llama/Llama-3.1-8B-Instruct"
    api_key_env = "VLLM_API_KEY"           # optional: the variable holding the key
    display_name = "Llama 3.1 8B"          # how the model is named to itself in prompts
    max_connections = 8                    # per endpoint (shared by models on one base_url)
    stream = true
    idle_timeout = 60                      # seconds of silence before a stream counts as hung
    retry_budget = 300                     # seconds to keep retrying 429/5xx/network errors
    reasoning_effort = "medium"            # reasoning models (OpenAI-compatible)
    think_tags = false                     # split inline <think>...</think> off the content
    prompt_logprobs = "vllm"               # the server scores given text (surprisal)
    [models.llama-8b.defaults]
    temperature = 0.8
    max_tokens = 300
    [models.llama-8b.prices]               # US dollars per million tokens: nodes get a cost
    input = 0.2
    output = 0.6

Anthropic models also take ``thinking = { budget_tokens = N }`` and ``prompt_caching = false``.

The format is checked by the pydantic models of :mod:`clonechat.registry_file`: an unknown key,
a wrong type or a broken rule is one line naming the file, the line, the model and the key.

API keys are read from the environment or a ``.env`` file in the current directory, at the
moment a provider is created; they are never stored, logged or printed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dotenv import dotenv_values
from pydantic import ValidationError

from clonechat.constants import MODELS_ENV_VAR as MODELS_ENV_VAR
from clonechat.errors import ConfigError
from clonechat.providers.base import GenerationParams, Provider, ProviderLoad
from clonechat.providers.pricing import Prices
from clonechat.redaction import without_credentials
from clonechat.registry_file import PROVIDERS as PROVIDERS
from clonechat.registry_file import ModelEntry, ModelsFile, check_thinking, models_file_error
from clonechat.registry_file import ModelsFileError as ModelsFileError
from clonechat.registry_file import ProviderName as ProviderName

if TYPE_CHECKING:
    from clonechat.providers.http import Endpoint


@dataclass(frozen=True)
class ModelSpec:
    name: str
    provider: ProviderName
    #: How the model is named to itself in prompts (the ``model_name`` variable).
    display_name: str
    defaults: GenerationParams = field(default_factory=GenerationParams)
    base_url: str | None = None
    model_id: str | None = None
    api_key_env: str | None = None
    max_connections: int = 8
    stream: bool = True
    idle_timeout: float = 60.0
    retry_budget: float = 300.0
    source: str = "built in"
    #: US dollars per million tokens; None: unknown (nothing is costed).
    prices: Prices | None = None
    #: OpenAI-compatible reasoning models: ``reasoning_effort`` sent with every request.
    reasoning_effort: str | None = None
    #: Anthropic extended thinking budget (tokens); None: thinking off.
    thinking_budget: int | None = None
    #: Split inline ``<think>...</think>`` off the content (OpenAI-compatible servers).
    think_tags: bool = False
    #: Anthropic prompt-caching breakpoints (on unless switched off).
    prompt_caching: bool = True
    #: How the server scores given text (None: it cannot; surprisal is "not available").
    prompt_logprobs: str | None = None
    #: The GGUF whose chat template the client renders (``prompt_logprobs = "llama-cpp"``).
    chat_template: str | None = None


def _embedded_defaults() -> GenerationParams:
    from clonechat.providers.embedded import EMBEDDED_DEFAULTS

    return EMBEDDED_DEFAULTS


BUILTIN_MODELS: dict[str, ModelSpec] = {
    "local": ModelSpec("local", "local", "SmolLM2-135M-Instruct", _embedded_defaults()),
    "scripted": ModelSpec("scripted", "scripted", "a scripted test model", GenerationParams(temperature=0.0)),
}


def spec_from_entry(name: str, entry: ModelEntry, source: str | Path) -> ModelSpec:
    """The model a validated ``[models.NAME]`` table describes."""
    base = _embedded_defaults() if entry.provider == "local" else GenerationParams()
    if entry.thinking is not None:
        # The only temperature Anthropic allows with thinking; and max_tokens counts thinking
        # too, so by default the answer keeps its usual allowance on top of the budget.
        base = replace(base, temperature=1.0, max_tokens=entry.thinking.budget_tokens + base.max_tokens)
    return ModelSpec(
        name=name,
        provider=entry.provider,
        display_name=entry.display_name or entry.model or name,
        defaults=entry.defaults.over(base),
        base_url=entry.base_url,
        model_id=entry.model,
        api_key_env=entry.api_key_env,
        max_connections=entry.max_connections,
        stream=entry.stream,
        idle_timeout=entry.idle_timeout,
        retry_budget=entry.retry_budget,
        source=str(source),
        prices=None if entry.prices is None else entry.prices.prices(),
        reasoning_effort=entry.reasoning_effort,
        thinking_budget=None if entry.thinking is None else entry.thinking.budget_tokens,
        think_tags=bool(entry.think_tags),
        prompt_caching=entry.prompt_caching is not False,
        prompt_logprobs=entry.prompt_logprobs,
        chat_template=entry.chat_template and str(Path(source).parent / Path(entry.chat_template).expanduser()),
    )


def check_generation(spec: ModelSpec, params: GenerationParams) -> None:
    """Parameters a dialogue will send to ``spec``'s model that its API would refuse, as one
    line (``ConfigError``) before any request: today, Anthropic's thinking rules."""
    if spec.thinking_budget is not None:
        try:
            check_thinking(spec.thinking_budget, params.max_tokens, params.temperature)
        except ValueError as exc:
            raise ConfigError(f"model '{spec.name}': {exc}") from None


def spec_from_toml(name: str, raw: Any, source: Path, *, text: str | None = None) -> ModelSpec:
    """Validate one ``[models.NAME]`` table (``raw``, parsed from ``source``, whose ``text``
    gives line numbers if known). Raises :class:`ModelsFileError`."""
    try:
        entry = ModelEntry.model_validate(raw)
    except ValidationError as exc:
        raise models_file_error(source, exc, text=text, prefix=("models", name)) from None
    return spec_from_entry(name, entry, source)


def read_models_file(path: Path) -> dict[str, ModelSpec]:
    """The models one file defines. Raises ``ConfigError`` (one line: file, line, model, key)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read models file {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        line = found.group(1) if found else max(1, len(text.splitlines())) if "end of document" in str(exc) else None
        place = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{place}: not valid TOML: {exc}") from None
    try:
        parsed = ModelsFile.model_validate(data)
    except ValidationError as exc:
        raise models_file_error(path, exc, text=text) from None
    return {name: spec_from_entry(name, entry, path) for name, entry in parsed.models.items()}


def registry_files(extra: Path | None = None) -> list[Path]:
    files = [Path.home() / ".config" / "clonechat" / "models.toml", Path("models.toml")]
    named = extra or (Path(os.environ[MODELS_ENV_VAR]) if os.environ.get(MODELS_ENV_VAR) else None)
    if named is not None:
        if not named.is_file():
            raise ConfigError(f"models file not found: {named}")
        files.append(named)
    return files


def load_registry(extra: Path | None = None) -> dict[str, ModelSpec]:
    """The built-in models, then those of every registry file in order (a later file's model
    replaces an earlier one of the same name)."""
    models = dict(BUILTIN_MODELS)
    for path in registry_files(extra):
        if path.is_file():
            models.update(read_models_file(path))
    return models


class Registry:
    """The models available to this process."""

    def __init__(self, models: Mapping[str, ModelSpec] | None = None) -> None:
        self.models = dict(models) if models is not None else load_registry()

    def get(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise ConfigError(f"unknown model '{name}' (known: {known})") from None


_default_registry: Registry | None = None


def default_registry() -> Registry:
    global _default_registry
    if _default_registry is None:
        _default_registry = Registry()
    return _default_registry


def set_default_registry(registry: Registry) -> None:
    global _default_registry
    _default_registry = registry


def get_model(name: str) -> ModelSpec:
    return default_registry().get(name)


def api_key(spec: ModelSpec, env: Mapping[str, str] | None = None) -> str | None:
    """The model's key from the environment, else from ``.env``; an error if it is needed
    and missing. The error names the variable, never a value."""
    if not spec.api_key_env:
        return None
    environment = os.environ if env is None else env
    value = environment.get(spec.api_key_env) or dotenv_values(".env").get(spec.api_key_env)
    if not value:
        raise ConfigError(
            f"model '{spec.name}' needs an API key: set the environment variable {spec.api_key_env} "
            "(or put it in a .env file)"
        )
    return value


class ProviderPool:
    """One provider per model name and one HTTP endpoint (client + limit) per base URL,
    created on first use and closed together, so every dialogue on an endpoint shares its
    connections, limits and caches."""

    def __init__(self, factory: Callable[[ModelSpec], Provider] | None = None) -> None:
        self._factory = factory
        self._providers: dict[str, Provider] = {}
        self._endpoints: dict[str, Endpoint] = {}

    def get(self, spec: ModelSpec) -> Provider:
        provider = self._providers.get(spec.name)
        if provider is None:
            provider = self._providers[spec.name] = (self._factory or self._build)(spec)
        return provider

    def add(self, name: str, provider: Provider) -> None:
        self._providers[name] = provider

    def endpoint(self, spec: ModelSpec) -> Endpoint | None:
        """The shared HTTP endpoint of a server-backed model (None for in-process models)."""
        return self._endpoint(spec) if spec.base_url is not None and spec.provider != "local" else None

    def loads(self) -> list[ProviderLoad]:
        """Requests in flight and queued on every endpoint and in-process model in use."""
        loads = [
            ProviderLoad(without_credentials(url), e.limiter.in_flight, e.limiter.queued, e.limiter.limit)
            for url, e in self._endpoints.items()
        ]
        for provider in self._providers.values():
            load = getattr(provider, "load", None)
            if callable(load):
                value = load()
                if isinstance(value, ProviderLoad):
                    loads.append(value)
        return loads

    def _endpoint(self, spec: ModelSpec) -> Endpoint:
        from clonechat.providers.http import Endpoint

        assert spec.base_url is not None
        endpoint = self._endpoints.get(spec.base_url)
        if endpoint is None:
            endpoint = self._endpoints[spec.base_url] = Endpoint(
                spec.base_url, max_connections=spec.max_connections, idle_timeout=spec.idle_timeout
            )
        return endpoint

    def _build(self, spec: ModelSpec) -> Provider:
        if spec.provider == "local":
            from clonechat.providers.embedded import EmbeddedProvider

            return EmbeddedProvider()
        if spec.provider == "scripted":
            from clonechat.providers.scripted import ScriptedProvider

            return ScriptedProvider(model_name=spec.name, prices=spec.prices)
        from clonechat.providers.retry import RetryPolicy

        assert spec.model_id is not None
        kwargs: dict[str, Any] = {
            "model_name": spec.name,
            "model_id": spec.model_id,
            "endpoint": self._endpoint(spec),
            "api_key": api_key(spec),
            "stream": spec.stream,
            "retry": RetryPolicy(budget=spec.retry_budget),
            "prices": spec.prices,
        }
        if spec.provider == "openai-compatible":
            kwargs.update(reasoning_effort=spec.reasoning_effort, think_tags=spec.think_tags)
            if spec.prompt_logprobs is not None:
                from clonechat.providers.server_logprobs import ScoringOpenAICompatibleProvider

                return ScoringOpenAICompatibleProvider(
                    **kwargs, prompt_logprobs=spec.prompt_logprobs, chat_template=spec.chat_template
                )
            from clonechat.providers.openai_compat import OpenAICompatibleProvider

            return OpenAICompatibleProvider(**kwargs)
        if spec.provider == "anthropic":
            from clonechat.providers.anthropic import AnthropicProvider

            return AnthropicProvider(**kwargs, thinking_budget=spec.thinking_budget, prompt_caching=spec.prompt_caching)
        raise ConfigError(f"model '{spec.name}': unknown provider '{spec.provider}'")

    async def aclose(self) -> None:
        providers = list(self._providers.values())
        self._providers.clear()
        for provider in providers:
            await provider.aclose()
        for endpoint in self._endpoints.values():
            await endpoint.aclose()
        self._endpoints.clear()

    def rate_limits(self) -> dict[str, dict[str, float]]:
        """Per endpoint in use: 429 responses (``"429"``) and seconds requests waited for its
        pacer (``"paced_s"``). Read it before ``aclose``, which forgets the endpoints."""
        return {
            url: {"429": e.rate_limited_responses, "paced_s": round(e.paced_seconds, 3)}
            for url, e in self._endpoints.items()
        }
