"""Which models clonechat can talk to, by name, and one shared provider per model.

Built in: ``local`` (the embedded SmolLM2) and ``scripted`` (deterministic canned replies, for
tests and orchestration benchmarks only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from clonechat.errors import ConfigError
from clonechat.providers.base import GenerationParams, Provider


@dataclass(frozen=True)
class ModelSpec:
    name: str
    provider: str
    #: How the model is named to itself in prompts (the ``model_name`` variable).
    display_name: str
    defaults: GenerationParams = field(default_factory=GenerationParams)
    options: dict[str, object] = field(default_factory=dict)


def _embedded_defaults() -> GenerationParams:
    from clonechat.providers.embedded import EMBEDDED_DEFAULTS

    return EMBEDDED_DEFAULTS


BUILTIN_MODELS: dict[str, ModelSpec] = {
    "local": ModelSpec("local", "embedded", "SmolLM2-135M-Instruct", _embedded_defaults()),
    "scripted": ModelSpec("scripted", "scripted", "a scripted test model", GenerationParams(temperature=0.0)),
}


def get_model(name: str) -> ModelSpec:
    try:
        return BUILTIN_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ConfigError(f"unknown model '{name}' (known: {known})") from None


def _build(spec: ModelSpec) -> Provider:
    if spec.provider == "embedded":
        from clonechat.providers.embedded import EmbeddedProvider

        return EmbeddedProvider()
    if spec.provider == "scripted":
        from clonechat.providers.scripted import ScriptedProvider

        return ScriptedProvider(model_name=spec.name)
    raise ConfigError(f"model '{spec.name}': unknown provider '{spec.provider}'")


class ProviderPool:
    """One provider instance per model name, created on first use and closed together, so
    every dialogue on a model shares its connections, limits and caches."""

    def __init__(self, factory: Callable[[ModelSpec], Provider] = _build) -> None:
        self._factory = factory
        self._providers: dict[str, Provider] = {}

    def get(self, spec: ModelSpec) -> Provider:
        provider = self._providers.get(spec.name)
        if provider is None:
            provider = self._providers[spec.name] = self._factory(spec)
        return provider

    def add(self, name: str, provider: Provider) -> None:
        self._providers[name] = provider

    async def aclose(self) -> None:
        providers = list(self._providers.values())
        self._providers.clear()
        for provider in providers:
            await provider.aclose()
