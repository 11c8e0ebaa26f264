"""The researcher's real job on the embedded model: an experiment with the measures on, against
the model's own speed measured in the same run.

For each concurrency (1, 4 and 8 dialogues in flight) it runs ``clonechat batch SPEC --json``
exactly as a user does (a subprocess, a fresh SQLite file) on a spec of 2 conditions x 4
replicates x 6 turns with partner prediction, self-prediction, two coordination tasks after the
dialogue and a report-back. From the stored nodes it takes every generated node's token count,
then a raw llama-cpp-python loop (one ``Llama``, the same sampling parameters) generates
exactly those numbers of tokens, call after call, continuing a fixed prompt as deep as the
experiment's median request (attention over a longer context costs more per token) whose KV
cache it keeps: the model's own speed. The same loop measures how fast the model evaluates
prompt tokens at that depth, which gives the time the experiment's evaluated prompt tokens
cost the model. Figures:

- generated tokens/s of the experiment (all nodes' completion tokens over the batch's own
  elapsed time) against the raw loop's: target >= 0.9 at concurrency 4; and the model time the
  experiment's work needs (its generated tokens at the raw rate plus its evaluated prompt
  tokens at the raw evaluation rate) over the batch's time: what clonechat adds on top;
- prompt tokens evaluated per generated token (what the KV caches did not save);
- prompt tokens evaluated per turn (the turn and the predictions made for it) at turn 6 against
  turn 2: target <= 1.3 (a view that lost its cache re-evaluates its whole history).

Run: python3 -m uv run python benchmarks/experiment.py [--quick]
``--quick`` (seconds, in the test suite) runs tiny sizes at concurrency 1 and 2 and enforces no
target: it checks only that every dialogue completes and the figures are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

from clonechat.providers import llama_runtime
from clonechat.providers.embedded import EMBEDDED_DEFAULTS, find_smollm2_gguf

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
name = "bench"
replicates = {replicates}
max_turns = {turns}
seed = 20261201
concurrency = {concurrency}
model_a = "local"
first_speaker = "alternate"

{params}[prediction]
self_predict = true

[coordination]
tasks = {tasks}
when = "after"
{coordination_tokens}
[report_back]
{report_tokens}

[[conditions]]
template = "clone-aware"

[[conditions]]
template = "no-frame"
"""


@dataclass(frozen=True)
class Sizes:
    concurrency: tuple[int, ...]
    replicates: int
    turns: int
    tasks: tuple[str, ...]
    #: Token limits; None keeps the defaults a user gets (the model's max_tokens of 200, 32 for
    #: a coordination answer, 300 for a report), so messages end where the model ends them.
    max_tokens: int | None = None
    coordination_tokens: int | None = None
    report_tokens: int | None = None


#: Turns of up to 48 tokens (as runs/smoke.toml), reports of up to 64: most messages run to the
#: limit, so turn 6 and turn 2 read partner messages of about the same length.
FULL = Sizes((1, 4, 8), replicates=4, turns=6, tasks=("number", "city"), max_tokens=48, report_tokens=64)
QUICK = Sizes((1, 2), replicates=1, turns=2, max_tokens=6, tasks=("number",), coordination_tokens=4, report_tokens=6)


@dataclass(frozen=True)
class ExperimentRun:
    concurrency: int
    dialogues: int
    elapsed: float
    #: Completion tokens of every node the model generated, in the order they were stored.
    generated: list[int]
    #: The median prompt length of those nodes' requests (cached and evaluated).
    depth: int
    evaluated: int
    #: Prompt tokens evaluated per turn index: the turn plus the predictions made for it.
    evaluated_by_turn: dict[int, float]


def _limit(tokens: int | None) -> str:
    return "" if tokens is None else f"max_tokens = {tokens}\n"


def run_experiment(sizes: Sizes, concurrency: int, workdir: Path) -> ExperimentRun:
    spec = workdir / f"bench-{concurrency}.toml"
    spec.write_text(
        SPEC.format(
            replicates=sizes.replicates,
            turns=sizes.turns,
            concurrency=concurrency,
            params="" if sizes.max_tokens is None else f"[params]\nmax_tokens = {sizes.max_tokens}\n\n",
            tasks=json.dumps(list(sizes.tasks)),
            coordination_tokens=_limit(sizes.coordination_tokens),
            report_tokens=_limit(sizes.report_tokens),
        )
    )
    db = workdir / f"bench-{concurrency}.db"
    command = [sys.executable, "-m", "clonechat", "batch", str(spec), "--db", str(db), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=3600, check=False)
    if result.returncode != 0:
        raise SystemExit(f"clonechat batch failed ({result.returncode}): {result.stderr[-2000:]}")
    summary = json.loads(result.stdout)
    dialogues = summary["dialogues"]
    expected = 2 * sizes.replicates
    if dialogues != {"total": expected, "completed": expected}:
        raise SystemExit(f"not every dialogue completed: {dialogues}")
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT dialogue_id, kind, turn_index, completion_tokens, prompt_tokens_evaluated, prompt_tokens FROM node "
            "WHERE kind NOT IN ('opening', 'error') ORDER BY created_at"
        ).fetchall()
    per_dialogue_turn: dict[tuple[int, str], int] = defaultdict(int)
    for dialogue_id, kind, turn_index, _, evaluated, _ in rows:
        if kind in ("turn", "prediction"):
            per_dialogue_turn[(turn_index, dialogue_id)] += evaluated or 0
    by_turn: dict[int, list[int]] = defaultdict(list)
    for (turn_index, _), evaluated in per_dialogue_turn.items():
        by_turn[turn_index].append(evaluated)
    return ExperimentRun(
        concurrency=concurrency,
        dialogues=expected,
        elapsed=float(summary["this_run"]["elapsed_s"]),
        generated=[tokens or 0 for _, _, _, tokens, _, _ in rows],
        depth=int(statistics.median(prompt or 0 for *_, prompt in rows)),
        evaluated=sum(evaluated or 0 for *_, evaluated, _ in rows),
        evaluated_by_turn={t: statistics.mean(v) for t, v in sorted(by_turn.items())},
    )


@dataclass(frozen=True)
class RawSpeed:
    generate_s: float
    #: Prompt tokens evaluated per second at the same depth.
    eval_rate: float


def raw_loop(counts: Sequence[int], depth: int) -> RawSpeed:
    """A bare llama-cpp-python loop generating exactly ``counts`` tokens, call after call, with
    clonechat's sampling defaults, each call continuing the same ``depth``-token prompt (kept in
    the KV cache); and its prompt evaluation rate at that depth. The model loads before the
    clock starts."""
    llama_runtime.apply()
    from llama_cpp import Llama

    p = EMBEDDED_DEFAULTS
    threads = os.cpu_count() or 1
    llm = Llama(model_path=str(find_smollm2_gguf()), n_ctx=8192, n_threads=threads, n_threads_batch=threads,
                verbose=False)  # fmt: skip
    try:
        header = llm.tokenize(b"<|im_start|>user\n", add_bos=False, special=True)
        tail = llm.tokenize(b"<|im_end|>\n<|im_start|>assistant\n", add_bos=False, special=True)
        filler = llm.tokenize(("The sea is wide and the waves are high. " * 1000).encode(), add_bos=False)
        prompt = header + filler[: max(1, depth - len(header) - len(tail))] + tail
        # Evaluation at depth: 128 tokens after a cached prefix as deep as the prompt, 4 times.
        probe = llm.tokenize(("Birds fly over the water at dawn. " * 100).encode(), add_bos=False)[:128]
        llm.eval(prompt)
        eval_s = 0.0
        for _ in range(4):
            llm.n_tokens = len(prompt)
            started = time.perf_counter()
            llm.eval(probe)
            eval_s += time.perf_counter() - started
        started = time.perf_counter()
        for index, want in enumerate(counts):
            if want <= 0:
                continue
            llm.set_seed(index)
            produced = 0
            for _ in llm.generate(
                prompt, temp=p.temperature, top_p=p.top_p or 1.0, repeat_penalty=p.repeat_penalty or 1.0
            ):
                produced += 1
                if produced >= want:
                    break
        return RawSpeed(time.perf_counter() - started, 4 * len(probe) / eval_s)
    finally:
        llm.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="seconds-long sizes; checks completion, no targets")
    parser.add_argument("--concurrency", type=int, nargs="+", help="only these concurrencies (default 1 4 8)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.concurrency:
        sizes = replace(sizes, concurrency=tuple(args.concurrency))
    print(
        f"experiment: 2 conditions x {sizes.replicates} replicates x {sizes.turns} turns, "
        f"max_tokens {sizes.max_tokens or 'default'}, partner + self prediction, "
        f"coordination {', '.join(sizes.tasks)} after, report-back; embedded SmolLM2"
    )
    print(
        "conc  dialogues  nodes  tokens  depth  batch s  raw s  batch tok/s  raw tok/s  ratio  "
        "eval/gen  model s  model/batch  turn N / turn 2"
    )
    verdicts: list[bool] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        raw_loop([8], 64)  # warm-up: the weights into the page cache before either side is timed
        for concurrency in sizes.concurrency:
            (workdir / str(concurrency)).mkdir()
            run = run_experiment(sizes, concurrency, workdir / str(concurrency))
            speed = raw_loop(run.generated, run.depth)
            raw = speed.generate_s
            tokens = sum(run.generated)
            ratio = (tokens / run.elapsed) / (tokens / raw)
            model = raw + run.evaluated / speed.eval_rate
            overhead = model / run.elapsed
            last = max(run.evaluated_by_turn)
            growth = run.evaluated_by_turn[last] / run.evaluated_by_turn[2]
            print(
                f"{concurrency:>4}  {run.dialogues:>9}  {len(run.generated):>5}  {tokens:>6}  {run.depth:>5}  "
                f"{run.elapsed:>7.1f}  {raw:>5.1f}  {tokens / run.elapsed:>11.1f}  {tokens / raw:>9.1f}  "
                f"{ratio:>5.2f}  "
                f"{run.evaluated / tokens:>8.2f}  {model:>7.1f}  {overhead:>11.2f}  {growth:>15.2f}"
            )
            per_turn = "  ".join(f"t{t}={v:.0f}" for t, v in run.evaluated_by_turn.items())
            print(f"      prompt tokens evaluated per turn (turn + its predictions, mean): {per_turn}")
            if concurrency == 4 or (args.quick and concurrency == sizes.concurrency[-1]):
                verdicts += [ratio >= 0.9, growth <= 1.3]
                print(
                    f"concurrency {concurrency}: generated tokens/s {ratio:.2f} x raw gen (target >= 0.9): "
                    f"{'PASS' if ratio >= 0.9 else 'FAIL'}; the model's own time for the same work is "
                    f"{overhead:.2f} of the batch's; "
                    f"turn {last} / turn 2 evaluated {growth:.2f} (target <= 1.3): "
                    f"{'PASS' if growth <= 1.3 else 'FAIL'}"
                )
    print("all:", ("PASS" if all(verdicts) else "FAIL") if verdicts else "no target at these concurrencies")
    if args.quick:
        print("(--quick: every dialogue completed; timing targets are not enforced at this size)")
        return 0
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
