"""The format of ``models.toml``, validated with pydantic, and its errors as one line each.

The file holds ``[models.NAME]`` tables and nothing else; each table's keys are
:class:`ModelEntry`'s fields, its ``[models.NAME.defaults]`` table :class:`ModelDefaults`'.
Every error names the file, the line where it can, the model and the key::

    models.toml:7: models.llama-8b: max_connections must be at least 1 (got 0)
    models.toml:2: models.x: provider must be local, openai-compatible, anthropic or scripted (got "nope")
    models.toml:4: models.x: unknown key 'colour' (known keys: api_key_env, base_url, ...)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from clonechat.batch.toml_lines import Loc, format_loc, line_of
from clonechat.config_errors import describe_error
from clonechat.errors import ConfigError
from clonechat.providers.base import GenerationParams
from clonechat.providers.pricing import Prices

#: Providers a models file may name (``scripted``, the test double, so that tests and harness
#: benchmarks can give it prices or a name of their own).
FileProviderName = Literal["local", "openai-compatible", "anthropic", "scripted"]
#: Every provider.
ProviderName = FileProviderName
PROVIDERS: tuple[ProviderName, ...] = get_args(ProviderName)
FILE_PROVIDERS: tuple[FileProviderName, ...] = get_args(FileProviderName)
#: How a server returns the log-probabilities of given text (see docs/surprisal.md).
PromptLogprobsForm = Literal["llama-cpp", "vllm", "sglang"]
ReasoningEffort = Literal["minimal", "low", "medium", "high"]
#: Anthropic's smallest thinking budget.
MIN_THINKING_BUDGET = 1024

NonEmpty = Annotated[str, Field(min_length=1)]


class ModelDefaults(BaseModel):
    """``[models.NAME.defaults]``: generation parameters over the provider's own defaults
    (the embedded model's for ``local``); anything left out keeps that default."""

    model_config = ConfigDict(extra="forbid", strict=True)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=100_000)
    top_p: float | None = Field(default=None, gt=0, le=1)
    repeat_penalty: float | None = Field(default=None, gt=0)
    seed: int | None = None

    def over(self, base: GenerationParams) -> GenerationParams:
        """``base`` with the parameters this table sets."""
        return GenerationParams(
            temperature=base.temperature if self.temperature is None else self.temperature,
            max_tokens=base.max_tokens if self.max_tokens is None else self.max_tokens,
            top_p=base.top_p if self.top_p is None else self.top_p,
            repeat_penalty=base.repeat_penalty if self.repeat_penalty is None else self.repeat_penalty,
            seed=base.seed if self.seed is None else self.seed,
        )


class ModelPrices(BaseModel):
    """``[models.NAME.prices]``: US dollars per million tokens (see :mod:`clonechat.providers.pricing`)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    reasoning: float | None = Field(default=None, ge=0)

    def prices(self) -> Prices:
        return Prices(**self.model_dump())


class ModelThinking(BaseModel):
    """``[models.NAME.thinking]``: Anthropic extended thinking."""

    model_config = ConfigDict(extra="forbid", strict=True)
    budget_tokens: int = Field(ge=MIN_THINKING_BUDGET)


#: Options that only one kind of provider understands.
_PROVIDER_OPTIONS: dict[str, tuple[str, ...]] = {
    "thinking": ("anthropic",),
    "prompt_caching": ("anthropic",),
    "reasoning_effort": ("openai-compatible",),
    "think_tags": ("openai-compatible",),
    "prompt_logprobs": ("openai-compatible",),
    "chat_template": ("openai-compatible",),
}


class ModelEntry(BaseModel):
    """One ``[models.NAME]`` table."""

    model_config = ConfigDict(extra="forbid", strict=True)
    provider: FileProviderName
    #: Required for every provider but ``local``.
    base_url: NonEmpty | None = None
    #: The server's name of the model; required for every provider but ``local``.
    model: NonEmpty | None = None
    #: The environment variable holding the API key (never the key itself).
    api_key_env: NonEmpty | None = None
    #: How the model is named to itself in prompts (default: ``model``, else the table's name).
    display_name: NonEmpty | None = None
    max_connections: int = Field(default=8, ge=1)
    stream: bool = True
    idle_timeout: float = Field(default=60.0, gt=0)
    retry_budget: float = Field(default=300.0, ge=0)
    #: Reasoning models on OpenAI-compatible servers: sent as ``reasoning_effort``.
    reasoning_effort: ReasoningEffort | None = None
    #: Anthropic extended thinking (needs temperature 1 and a budget below ``max_tokens``).
    thinking: ModelThinking | None = None
    #: Split ``<think>...</think>`` off the start of the content, for servers that send the
    #: reasoning inline instead of as ``reasoning_content`` / ``reasoning``.
    think_tags: bool | None = None
    #: Anthropic: mark the system prompt and the history's last message for prompt caching.
    prompt_caching: bool | None = None
    #: The server can score given text, in this form (the ``surprisal`` scorer uses it).
    prompt_logprobs: PromptLogprobsForm | None = None
    #: ``prompt_logprobs = "llama-cpp"``: the GGUF the server serves, whose chat template and
    #: vocabulary clonechat reads to render the prompt (relative to the models file).
    chat_template: NonEmpty | None = None
    prices: ModelPrices | None = None
    defaults: ModelDefaults = Field(default_factory=ModelDefaults)

    @model_validator(mode="after")
    def _servers_need_url_and_model(self) -> Self:
        if self.provider not in ("local", "scripted"):
            for key in ("base_url", "model"):
                if getattr(self, key) is None:
                    raise ValueError(f"'{key}' is required for provider {self.provider}")
        for key, providers in _PROVIDER_OPTIONS.items():
            if getattr(self, key) is not None and self.provider not in providers:
                raise ValueError(f"'{key}' is an option of provider {' and '.join(providers)}, not {self.provider}")
        if self.thinking is not None:
            defaults = self.defaults
            check_thinking(self.thinking.budget_tokens, defaults.max_tokens, defaults.temperature, "defaults.")
        return self


def check_thinking(budget: int, max_tokens: int | None, temperature: float | None, where: str = "") -> None:
    """Anthropic's rules for extended thinking, checked before any request: the budget must be
    below ``max_tokens`` (which counts thinking and answer together) and sampling must be left
    at temperature 1. Raises ``ValueError`` with one line naming the key."""
    if max_tokens is not None and budget >= max_tokens:
        raise ValueError(
            f"thinking.budget_tokens ({budget}) must be below {where}max_tokens ({max_tokens}): "
            "max_tokens counts the thinking and the answer together"
        )
    if temperature is not None and temperature != 1:
        raise ValueError(f"{where}temperature must be 1 with thinking (got {temperature:g}): the API allows no other")


class ModelsFile(BaseModel):
    """A whole ``models.toml``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    models: dict[str, ModelEntry] = Field(default_factory=dict)


class ModelsFileError(ConfigError):
    """A models file (or a spec's inline ``[models.NAME]``) is malformed. ``str()`` is the
    whole line; ``loc`` is the key path from the file's top (``("models", "x", "stream")``)
    and ``reason`` the part after ``models.NAME:``, which names the key."""

    def __init__(self, message: str, *, loc: Loc, reason: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.reason = reason


_TYPES = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "string_too_short": "must not be empty",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be greater than"),
    "less_than_equal": ("le", "must be at most"),
    "less_than": ("lt", "must be less than"),
}


def _known_keys(in_entry: bool, table: Loc) -> list[str]:
    model: type[BaseModel] = ModelEntry if in_entry else ModelsFile
    nested: dict[str, type[BaseModel]] = {"defaults": ModelDefaults, "prices": ModelPrices, "thinking": ModelThinking}
    if in_entry and table[:1] and str(table[0]) in nested:
        model = nested[str(table[0])]
    return sorted(model.model_fields)


def _reason(error: ErrorDetails, key: Loc, *, in_entry: bool) -> str:
    """What is wrong, naming ``key`` (the path inside the model's table, or from the top)."""
    kind = error["type"]
    if kind in ("extra_forbidden", "missing"):
        table = key[:-1]
        return describe_error(error, _known_keys(in_entry, table), table=format_loc(table) if table else "")
    ctx = error.get("ctx", {})
    if kind == "literal_error":
        phrase = "must be " + str(ctx.get("expected", "")).replace("'", "")
    elif kind in _TYPES:
        phrase = _TYPES[kind]
    elif kind in _BOUNDS:
        bound, words = _BOUNDS[kind]
        limit = ctx.get(bound)
        phrase = f"{words} {int(limit) if isinstance(limit, float) and limit.is_integer() else limit}"
    else:
        phrase = describe_error(error, [])
        return f"{format_loc(key)}: {phrase}" if key else phrase
    if key == ("models",) and phrase == "must be a table":
        phrase = "must be a table of [models.NAME] tables"
    value = error.get("input")
    if isinstance(value, str | int | float) and kind != "string_too_short":
        phrase += f" (got {json.dumps(value)})"
    return f"{format_loc(key)} {phrase}" if key else phrase


def models_file_error(
    source: str | Path, exc: ValidationError, *, text: str | None = None, prefix: Loc = ()
) -> ModelsFileError:
    """``exc`` (from validating ``text``, read from ``source``, or a table ``prefix`` of it) as
    one line: ``file[:line]: models.NAME: reason``."""
    errors = exc.errors()
    first = errors[0]
    loc: Loc = (*prefix, *first["loc"])
    in_entry = len(loc) >= 2 and loc[0] == "models"
    key = loc[2:] if in_entry else loc
    reason = _reason(first, key, in_entry=in_entry)
    others = {(*prefix, *e["loc"]) for e in errors} - {loc}
    if others:
        reason += f" (and {len(others)} more problem{'s' if len(others) > 1 else ''})"
    line = line_of(text, loc) if text else None
    place = f"{source}:{line}" if line else str(source)
    head = f" models.{loc[1]}:" if in_entry else ""
    return ModelsFileError(f"{place}:{head} {reason}", loc=loc, reason=reason)
