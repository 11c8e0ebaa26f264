"""What an experiment has spent: dollars and tokens, from every node stored of it.

The one answer to "how much has this cost?", for the budget a batch stops at
(``max_cost``, ``max_tokens_total``), ``clonechat ls`` and the report. Every node a model wrote
counts (turns, predictions, reports-back, coordination answers, on every branch), since each
was a billed call; openings and researcher edits have no usage and cost nothing. Tokens are
prompt plus output tokens as the servers reported them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clonechat.read.connect import Readable, connection

_SUMS = """coalesce(sum(n.cost_usd), 0.0), count(n.cost_usd),
       coalesce(sum(CASE WHEN n.cost_usd IS NULL AND n.completion_tokens IS NOT NULL THEN 1 ELSE 0 END), 0),
       coalesce(sum(coalesce(n.prompt_tokens, 0) + coalesce(n.completion_tokens, 0)), 0),
       coalesce(sum(n.prompt_tokens_cached), 0), coalesce(sum(n.prompt_tokens_cache_written), 0),
       coalesce(sum(n.reasoning_tokens), 0)
FROM node n JOIN dialogue d ON d.id = n.dialogue_id JOIN condition c ON c.id = d.condition_id"""
_SPENT = f"SELECT {_SUMS} WHERE c.experiment_id = :experiment_id"
#: Per experiment name (``clonechat ls``, which reads without the ORM).
_SPENT_BY_NAME = f"SELECT e.name, {_SUMS} JOIN experiment e ON e.id = c.experiment_id GROUP BY e.name"


@dataclass(frozen=True)
class Spending:
    """Dollars and tokens stored for an experiment."""

    #: Sum over the nodes whose model has prices.
    cost_usd: float
    #: Nodes with a cost, and nodes a model wrote with no prices known (not in ``cost_usd``).
    priced_calls: int
    unpriced_calls: int
    #: Prompt + output tokens of every node.
    tokens: int
    cached_tokens: int
    cache_written_tokens: int
    reasoning_tokens: int

    @property
    def has_cost(self) -> bool:
        return self.priced_calls > 0


def _spending(row: Sequence[Any]) -> Spending:
    return Spending(float(row[0]), *(int(v) for v in row[1:]))


def experiment_spending(db: Readable, experiment_id: str) -> Spending:
    from sqlalchemy import text

    with connection(db) as conn:
        return _spending(conn.execute(text(_SPENT), {"experiment_id": experiment_id}).one())


def spending_by_experiment(db: Readable) -> dict[str, Spending]:
    """Every experiment's spending, by name."""
    from sqlalchemy import text

    with connection(db) as conn:
        return {str(row[0]): _spending(row[1:]) for row in conn.execute(text(_SPENT_BY_NAME))}
