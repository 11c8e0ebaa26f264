"""What a spec will cost before it runs: dialogues, model calls and tokens, for ``--dry-run``.

Figures are upper bounds: every dialogue is assumed to run all its turns and every turn to use
its whole ``max_tokens`` (a stop phrase or shorter replies only make it cheaper). Prompt text
is counted at about four characters per token, which is close for English and needs no
tokenizer. A provider with a KV cache (the embedded model, vLLM, llama.cpp) evaluates far
fewer input tokens than it is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from clonechat.batch.spec import LoadedSpec, PlannedCondition

CHARS_PER_TOKEN = 4
#: Chat-template tokens around each message (role markers, separators).
MESSAGE_OVERHEAD = 8


@dataclass(frozen=True)
class ConditionEstimate:
    condition: str
    template: str
    model_a: str
    model_b: str
    dialogues: int
    max_turns: int
    max_tokens: int
    model_calls: int
    output_tokens: int
    input_tokens: int


def text_tokens(text: str) -> int:
    """A rough token count of a message: ~4 characters a token, plus its chat markup."""
    return len(text) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD


def estimate_condition(condition: PlannedCondition) -> ConditionEstimate:
    plan = condition.blueprint
    turns = condition.max_turns
    max_tokens = max(plan.params_a.max_tokens, plan.params_b.max_tokens)
    fixed = (text_tokens(plan.system_a.text) + text_tokens(plan.system_b.text)) // 2 + text_tokens(plan.opening.text)
    # Turn t sees the system prompt, the opening and the t-1 earlier turns.
    per_dialogue_input = turns * fixed + (max_tokens + MESSAGE_OVERHEAD) * turns * (turns - 1) // 2
    # Each prediction is a request as long as a turn's, and may be as long as the turn it predicts.
    m = plan.request.measures
    per_turn = 1
    if m.prediction is not None:
        per_turn += 1 + int(m.prediction.self_predict) + int(m.prediction.cross_model is not None)
    side_calls, side_output, side_input = 0, 0, 0
    if m.coordination is not None:
        asked = 2 * len(m.coordination.tasks) * (2 if m.coordination.when == "both" else 1)
        side_calls += asked
        side_output += asked * m.coordination.max_tokens
        side_input += asked * (fixed + (max_tokens + MESSAGE_OVERHEAD) * turns // 2)
    if m.report_back is not None:
        side_calls += 2
        side_output += 2 * m.report_back.max_tokens
        side_input += 2 * (fixed + (max_tokens + MESSAGE_OVERHEAD) * turns)
    return ConditionEstimate(
        condition=condition.name,
        template=plan.request.condition,
        model_a=plan.spec_a.name,
        model_b=plan.spec_b.name,
        dialogues=condition.replicates,
        max_turns=turns,
        max_tokens=max_tokens,
        model_calls=condition.replicates * (turns * per_turn + side_calls),
        output_tokens=condition.replicates * (turns * max_tokens * per_turn + side_output),
        input_tokens=condition.replicates * (per_dialogue_input * per_turn + side_input),
    )


def estimate(loaded: LoadedSpec) -> list[ConditionEstimate]:
    return [estimate_condition(condition) for condition in loaded.conditions]
