"""Stopping an experiment at a budget: ``max_cost`` (US dollars) and ``max_tokens_total``.

A budget stops a batch the way a first Ctrl-C does: the turns in flight finish and are stored,
no new turn or dialogue starts, and the run exits with :data:`EXIT_BUDGET`. What counts is
everything the experiment has stored (:mod:`clonechat.read.spending`), read when the batch
starts, plus every node this run stores; so a resumed run knows what earlier runs spent, and a
later run with a higher budget carries on where this one stopped. A budget is a runtime
setting, not part of what the experiment is: raising it in the spec, or with ``--max-cost`` /
``--max-tokens-total``, resumes the same experiment.

Turns already in flight when the budget is reached still finish (that is what keeps every
stored turn whole), so the final spend can pass the budget by up to one call per dialogue in
flight. With several workers on one PostgreSQL database, each knows the others' spending as of
its own start and its own since; the overshoot then grows by what the others spend meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clonechat.engine.events import Event, NodeCompleted
from clonechat.read.spending import Spending
from clonechat.rendering import format_cost

#: ``clonechat batch`` exit status when it stopped at its budget.
EXIT_BUDGET = 3


@dataclass(frozen=True)
class Budget:
    max_cost: float | None = None
    max_tokens_total: int | None = None

    @property
    def limited(self) -> bool:
        return self.max_cost is not None or self.max_tokens_total is not None

    def reached(self, cost: float, tokens: int) -> str | None:
        """Why the budget is spent (one clause), or None while it is not."""
        if self.max_cost is not None and cost >= self.max_cost:
            return f"spent {format_cost(cost)} of max_cost {format_cost(self.max_cost)}"
        if self.max_tokens_total is not None and tokens >= self.max_tokens_total:
            return f"used {tokens:,} tokens of max_tokens_total {self.max_tokens_total:,}"
        return None


class BudgetGuard:
    """An event sink that adds up each stored node's cost and tokens, over what the experiment
    had already spent, and calls ``stop`` once when the budget is reached."""

    def __init__(self, budget: Budget, spent: Spending, stop: Callable[[str], None]) -> None:
        self.budget = budget
        self.cost = spent.cost_usd
        self.tokens = spent.tokens
        self._stop = stop
        #: Why the batch stopped at its budget (None: it did not).
        self.reason: str | None = budget.reached(self.cost, self.tokens)

    async def __call__(self, event: Event) -> None:
        if not isinstance(event, NodeCompleted):
            return
        for node in (event.node, *event.side):
            self.cost += node.cost_usd or 0.0
            self.tokens += (node.prompt_tokens or 0) + (node.completion_tokens or 0)
        if self.reason is None and (reason := self.budget.reached(self.cost, self.tokens)) is not None:
            self.reason = reason
            self._stop(reason)
