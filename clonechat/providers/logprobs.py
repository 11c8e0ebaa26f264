"""How likely a model finds a given text: the log-probability of a continuation of a chat.

The SURPRISAL scorer asks the predicting clone's model how probable the message its partner
actually wrote is, given the predictor's own context. Only backends that can score given text
(not just report the probabilities of tokens they sampled themselves) implement
:class:`LogprobSource`; see ``docs/surprisal.md`` for which servers can.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from clonechat.providers.base import ChatMessage


@dataclass(frozen=True)
class ContinuationLogprob:
    """Log-probability of a continuation's tokens given a prompt."""

    #: Sum of the natural-log probabilities of the continuation's tokens (<= 0).
    total: float
    #: Number of continuation tokens scored.
    tokens: int

    @property
    def mean(self) -> float:
        """Mean natural-log probability per token (0.0 for an empty continuation)."""
        return self.total / self.tokens if self.tokens else 0.0

    @property
    def surprisal_bits_per_token(self) -> float:
        """Mean surprisal in bits per token: ``-mean / ln 2`` (0.0 for an empty continuation)."""
        return -self.mean / math.log(2) if self.tokens else 0.0


class LogprobSource(Protocol):
    """A backend that can score given text."""

    model_name: str

    async def continuation_logprob(self, messages: Sequence[ChatMessage], continuation: str) -> ContinuationLogprob:
        """Log-probability that the model, given ``messages`` rendered as a request for the next
        assistant message, writes exactly ``continuation`` (not counting the end-of-turn token).
        Raises ``ProviderError`` when the model cannot score it (e.g. it does not fit)."""
        ...
