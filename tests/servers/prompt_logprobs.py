"""Hand-made response bodies of the servers that return prompt log-probabilities, for the
scriptable loopback server of :mod:`tests.servers.fake_model` (vLLM and SGLang need a GPU).

Each builder produces exactly the JSON the server's documented response model serializes to,
for given token ids and log-probabilities:

* vLLM ``POST /tokenize`` -> ``TokenizeResponse`` (``count``, ``max_model_len``, ``tokens``,
  ``token_strs``) and ``POST /v1/completions`` with ``prompt_logprobs`` ->
  ``CompletionResponse`` whose ``choices[i].prompt_logprobs`` is
  ``list[dict[int, Logprob] | None]``: ``None`` for the first prompt token, then for each
  position the top ``prompt_logprobs`` tokens plus the prompt token itself (injected with rank
  ``n + 1`` when it is not among them); ``Logprob`` is ``{"logprob", "rank", "decoded_token"}``
  and JSON turns the int keys into strings (vllm/entrypoints/openai/completion/protocol.py,
  vllm/v1/engine/logprobs.py ``_make_pos_logprob_dict``).
* SGLang ``POST /tokenize`` -> ``TokenizeResponse`` (``tokens``, ``count``, ``max_model_len``)
  and native ``POST /generate`` with ``return_logprob`` -> ``{"text", "output_ids",
  "meta_info"}`` where ``meta_info.input_token_logprobs`` lists ``[logprob, token_id, text]``
  (text ``None`` unless ``return_text_in_logprobs``) from ``logprob_start_len`` on, the entry
  of the first prompt token having logprob ``None``; ``prompt_tokens ==
  logprob_start_len + len(input_token_logprobs)`` (sglang test/srt/test_srt_endpoint.py
  ``test_logprob_start_len``). Older SGLang returned one entry fewer (from
  ``logprob_start_len + 1``): ``skip_first`` builds that form.
"""

from __future__ import annotations

from typing import Any

#: A token id no test sequence uses: the "top-1" token where the real one is not the likeliest.
DECOY = 99_999


def vllm_tokenize(tokens: list[int], max_model_len: int = 4096) -> dict[str, Any]:
    return {"count": len(tokens), "max_model_len": max_model_len, "tokens": tokens, "token_strs": None}


def vllm_completion(ids: list[int], logprobs: list[float], *, model: str = "m") -> dict[str, Any]:
    """The answer to ``prompt = ids, prompt_logprobs = 1, max_tokens = 1``: ``logprobs[i]`` is
    the log-probability of ``ids[i + 1]``. Where it is below -1, a decoy is the top-1 token and
    the prompt token is injected with rank 2, as vLLM does."""
    assert len(logprobs) == len(ids) - 1
    entries: list[dict[str, dict[str, Any]] | None] = [None]
    for token, value in zip(ids[1:], logprobs, strict=True):
        if value >= -1.0:
            entries.append({str(token): {"logprob": value, "rank": 1, "decoded_token": f"t{token}"}})
        else:
            entries.append(
                {
                    str(DECOY): {"logprob": -0.5, "rank": 1, "decoded_token": "decoy"},
                    str(token): {"logprob": value, "rank": 2, "decoded_token": f"t{token}"},
                }
            )
    return {
        "id": "cmpl-test",
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": " x",
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
                "token_ids": None,
                "prompt_logprobs": entries,
                "prompt_token_ids": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": {"prompt_tokens": len(ids), "total_tokens": len(ids) + 1, "completion_tokens": 1},
    }


def sglang_tokenize(tokens: list[int], max_model_len: int = 4096) -> dict[str, Any]:
    return {"tokens": tokens, "count": len(tokens), "max_model_len": max_model_len}


def sglang_generate(ids: list[int], logprobs: list[float], start: int, *, skip_first: bool = False) -> dict[str, Any]:
    """The answer to ``input_ids = ids, return_logprob, logprob_start_len = start,
    max_new_tokens = 0``: ``logprobs[i]`` is the log-probability of ``ids[i + 1]``."""
    assert len(logprobs) == len(ids) - 1
    values: list[float | None] = [None, *logprobs]
    first = start + 1 if skip_first else start
    entries = [[values[i], ids[i], None] for i in range(first, len(ids))]
    return {
        "text": "",
        "output_ids": [],
        "meta_info": {
            "id": "0123456789abcdef",
            "finish_reason": {"type": "length", "length": 0},
            "prompt_tokens": len(ids),
            "weight_version": "default",
            "completion_tokens": 0,
            "cached_tokens": 0,
            "e2e_latency": 0.01,
            "input_token_logprobs": entries,
            "output_token_logprobs": [],
        },
    }
