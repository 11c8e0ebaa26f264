"""Surprisal on servers that return prompt log-probabilities (placeholder: being written)."""

from __future__ import annotations

from typing import Any

from clonechat.providers.openai_compat import OpenAICompatibleProvider


class ScoringOpenAICompatibleProvider(OpenAICompatibleProvider):
    """An OpenAI-compatible model whose server can also score given text."""

    def __init__(self, *, prompt_logprobs: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prompt_logprobs = prompt_logprobs
