"""The convergence stop: has a per-turn metric stayed past a threshold for k turns in a row?

Published self-interaction studies describe attractor states (two agents echoing each other,
or one looping on itself); :class:`ConvergenceRule` names the metric that detects one
(``overlap_partner``, ``repetition``, any per-turn metric of :mod:`clonechat.engine.metrics`),
its threshold and k. The streak is a function of the path alone, replayed on resume, so a
resumed dialogue stops at exactly the turn an uninterrupted one would have; the report replays
the same function over stored transcripts to mark where a dialogue converged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

from clonechat.engine.metrics import PathState, TurnMetrics
from clonechat.engine.protocol import ConvergenceRule
from clonechat.engine.records import NodeRecord

#: The per-turn metrics a convergence rule may name: the fractions in [0, 1].
CONVERGENCE_METRICS: tuple[str, ...] = ("overlap_partner", "overlap_self", "repetition", "symbol_rate", "emoji_rate")
assert set(CONVERGENCE_METRICS) <= {f.name for f in fields(TurnMetrics)}


class ConvergenceTracker:
    """Follows a path's agent turns and counts how many in a row meet the rule."""

    def __init__(self, rule: ConvergenceRule) -> None:
        if rule.metric not in CONVERGENCE_METRICS:
            raise ValueError(f"unknown convergence metric {rule.metric!r} (known: {', '.join(CONVERGENCE_METRICS)})")
        self.rule = rule
        self._state = PathState()
        self.streak = 0
        #: The agent turn count at which the streak first reached k (None: not yet).
        self.converged_at: int | None = None
        self._agent_turns = 0

    def add(self, node: NodeRecord) -> None:
        """Take the next node of the path into account (only agent turns count)."""
        if node.kind != "turn" or node.speaker == "researcher":
            return
        metrics = self._state.advance(node.id, node.dialogue_id, node.speaker, node.content)
        self._agent_turns += 1
        value = getattr(metrics, self.rule.metric)
        self.streak = self.streak + 1 if value is not None and value >= self.rule.threshold else 0
        if self.converged_at is None and self.streak >= self.rule.turns:
            self.converged_at = self._agent_turns

    def extend(self, nodes: Iterable[NodeRecord]) -> ConvergenceTracker:
        for node in nodes:
            self.add(node)
        return self

    @property
    def converged(self) -> bool:
        return self.streak >= self.rule.turns


def converged_at(rule: ConvergenceRule, path: Iterable[NodeRecord]) -> int | None:
    """The agent turn (1-based count) at which ``path`` first met ``rule``, or None."""
    return ConvergenceTracker(rule).extend(path).converged_at
