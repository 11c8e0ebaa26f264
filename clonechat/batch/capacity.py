"""What a batch's concurrency asks of each backend, said in one line when the batch starts.

``concurrency`` counts dialogues in flight, and each dialogue sends one request at a time. An
HTTP endpoint serves at most its ``max_connections`` requests at once: more dialogues than that
simply queue, which is correct but should not look like "10 running" when 8 are. The embedded
model serves one request at a time whatever the concurrency, and keeps every agent view's KV
state within a memory budget; views beyond it are re-evaluated. Both are said up front rather
than discovered from the throughput.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clonechat.batch.estimate import MESSAGE_OVERHEAD, text_tokens
from clonechat.batch.spec import PlannedCondition
from clonechat.redaction import without_credentials
from clonechat.registry import ModelSpec, ProviderPool

if TYPE_CHECKING:
    from clonechat.providers.http import Endpoint

#: A side request (prediction, report) adds its instruction and answer to a view's tokens.
SIDE_REQUEST_TOKENS = 160


@dataclass(frozen=True)
class _Demand:
    """What one condition's dialogues ask of one model: its views and their longest length."""

    views_per_dialogue: int
    tokens_per_view: int


def _demands(condition: PlannedCondition) -> list[tuple[ModelSpec, _Demand]]:
    plan = condition.blueprint
    cross = plan.measures.cross_model
    longest = max(plan.params_a.max_tokens, plan.params_b.max_tokens)
    fixed = max(text_tokens(plan.system_a.text), text_tokens(plan.system_b.text)) + text_tokens(plan.opening.text)
    tokens = fixed + condition.max_turns * (longest + MESSAGE_OVERHEAD) + longest + SIDE_REQUEST_TOKENS
    views: Counter[str] = Counter([plan.spec_a.name, plan.spec_b.name])
    specs = {plan.spec_a.name: plan.spec_a, plan.spec_b.name: plan.spec_b}
    if cross is not None:
        views[cross.name] += 1
        specs[cross.name] = cross
    return [(specs[name], _Demand(n, tokens)) for name, n in views.items()]


def capacity_notes(
    conditions: Sequence[PlannedCondition], job_conditions: Sequence[str], concurrency: int, pool: ProviderPool
) -> list[str]:
    """One line per backend that ``concurrency`` dialogues of these jobs would overrun."""
    from clonechat.providers.embedded import EmbeddedProvider

    jobs = Counter(job_conditions)
    in_flight = min(concurrency, sum(jobs.values()))
    if in_flight <= 1:
        return []
    per_endpoint: dict[str, tuple[Endpoint, int]] = {}
    embedded: dict[str, tuple[EmbeddedProvider, int, int]] = {}
    for condition in conditions:
        dialogues = min(in_flight, jobs.get(condition.name, 0))
        if not dialogues:
            continue
        for spec, demand in _demands(condition):
            endpoint = pool.endpoint(spec)
            if endpoint is not None:
                _, before = per_endpoint.get(endpoint.base_url, (endpoint, 0))
                per_endpoint[endpoint.base_url] = (endpoint, min(in_flight, before + dialogues))
                continue
            provider = pool.get(spec)
            if isinstance(provider, EmbeddedProvider):
                _, views, tokens = embedded.get(spec.name, (provider, 0, 0))
                views = min(views + dialogues * demand.views_per_dialogue, in_flight * demand.views_per_dialogue)
                embedded[spec.name] = (provider, views, max(tokens, demand.tokens_per_view))
    notes = []
    for url, (endpoint, dialogues) in per_endpoint.items():
        if dialogues > endpoint.max_connections:
            notes.append(
                f"{without_credentials(url)}: {dialogues} dialogues in flight share "
                f"max_connections = {endpoint.max_connections}: "
                f"at most {endpoint.max_connections} requests run at once and the rest wait "
                "(raise max_connections for its models in models.toml if the server can take more)"
            )
    for provider, views, tokens in embedded.values():
        note = provider.capacity_note(views, min(tokens, provider.context_tokens))
        if note is not None:
            notes.append(note)
    return notes
