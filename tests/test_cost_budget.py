"""What calls cost, what a spec will cost, and stopping an experiment at its budget.

Costs are checked against sums done by hand; the budget against a scripted model with prices
(the ``scripted`` provider reports words as tokens), with every stored turn compared to an
unbudgeted run of the same spec, so a stop and a resume are seen to lose or change nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from clonechat.batch.estimate import CHARS_PER_TOKEN, MESSAGE_OVERHEAD
from clonechat.batch.spec import load_spec_file
from clonechat.cli import app
from clonechat.location import DbLocation
from clonechat.providers.anthropic import AnthropicProvider
from clonechat.providers.base import ChatMessage, ChatRequest, GenerationParams
from clonechat.providers.http import Endpoint
from clonechat.providers.openai_compat import OpenAICompatibleProvider
from clonechat.providers.pricing import Prices, Usage, cost_usd
from clonechat.registry import Registry, load_registry
from clonechat.rendering import format_cost
from tests.conftest import on_both_backends
from tests.helpers import raw_sql, statuses, stored_conversations
from tests.servers.fake_model import Reply, fake_model_server

SONNET = Prices(input=3.0, output=15.0, cached_input=0.30, cache_write=3.75)


def test_cost_of_a_known_usage_by_hand() -> None:
    usage = Usage(prompt=10_000, cached=6_000, cache_written=2_000, output=1_000)
    # 2,000 fresh x $3 + 6,000 read x $0.30 + 2,000 written x $3.75 + 1,000 out x $15, per million
    assert cost_usd(SONNET, usage) == pytest.approx((6_000 + 1_800 + 7_500 + 15_000) / 1e6)
    # Reasoning billed apart moves its tokens from the output rate to its own, never both.
    reasoning = Prices(input=1.0, output=10.0, reasoning=20.0)
    assert cost_usd(reasoning, Usage(prompt=100, output=1_000, reasoning=400)) == pytest.approx(
        (100 * 1 + 600 * 10 + 400 * 20) / 1e6
    )
    # Unpriced cache rates are billed as input; no reasoning price: reasoning is output.
    plain = Prices(input=2.0, output=8.0)
    assert cost_usd(plain, Usage(prompt=500, cached=300, cache_written=100, output=50, reasoning=20)) == pytest.approx(
        (500 * 2 + 50 * 8) / 1e6
    )


def _request() -> ChatRequest:
    return ChatRequest([ChatMessage("system", "s"), ChatMessage("user", "hi")], GenerationParams(max_tokens=16))


async def _ignore(_text: str) -> None:
    return None


@pytest.mark.anyio
async def test_anthropic_cost_comes_from_the_usage_the_server_sent() -> None:
    body = {
        "type": "message",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 100,
            "cache_read_input_tokens": 1_000,
            "cache_creation_input_tokens": 200,
            "output_tokens": 50,
        },
    }
    with fake_model_server(Reply(200, body)) as server:
        endpoint = Endpoint(server.url)
        provider = AnthropicProvider(model_name="claude", model_id="c", endpoint=endpoint, stream=False, prices=SONNET)
        try:
            completion = await provider.generate(_request(), _ignore)
        finally:
            await endpoint.aclose()
    assert (completion.prompt_tokens, completion.prompt_tokens_cached, completion.prompt_tokens_cache_written) == (
        1_300,
        1_000,
        200,
    )
    assert completion.prompt_tokens_evaluated == 300
    assert completion.cost_usd == pytest.approx((100 * 3 + 1_000 * 0.3 + 200 * 3.75 + 50 * 15) / 1e6)


@pytest.mark.anyio
async def test_openai_cost_counts_cached_and_reasoning_tokens() -> None:
    body = {
        "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 2_000,
            "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1_500},
            "completion_tokens_details": {"reasoning_tokens": 200},
        },
    }
    prices = Prices(input=2.0, output=8.0, cached_input=0.5, reasoning=8.0)
    with fake_model_server(Reply(200, body)) as server:
        endpoint = Endpoint(server.url)
        provider = OpenAICompatibleProvider(
            model_name="gpt", model_id="g", endpoint=endpoint, stream=False, prices=prices
        )
        try:
            completion = await provider.generate(_request(), _ignore)
        finally:
            await endpoint.aclose()
    assert completion.reasoning_tokens == 200
    assert completion.cost_usd == pytest.approx((500 * 2 + 1_500 * 0.5 + 300 * 8) / 1e6)


def test_models_file_prices_and_their_errors(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.c]\nprovider = "anthropic"\nbase_url = "http://x"\nmodel = "m"\n'
        "[models.c.prices]\ninput = 3\noutput = 15.0\ncached_input = 0.3\ncache_write = 3.75\n"
    )
    assert load_registry(path)["c"].prices == SONNET
    path.write_text('[models.c]\nprovider = "scripted"\n[models.c.prices]\ninput = 3\n')
    with pytest.raises(Exception, match=r"models.toml:2: models.c: required key 'prices.output' is missing|output"):
        load_registry(path)
    path.write_text('[models.c]\nprovider = "scripted"\n[models.c.prices]\ninput = -1\noutput = 1\n')
    with pytest.raises(Exception, match=r"models.toml:4: models.c: prices.input must be at least 0"):
        load_registry(path)
    path.write_text('[models.c]\nprovider = "scripted"\n[models.c.prices]\ninput = 1\noutput = 1\ncolour = 2\n')
    with pytest.raises(Exception, match=r"unknown key 'colour'.*cache_write"):
        load_registry(path)


# -- the dry run's estimate -----------------------------------------------------------------------

CLAUDE_MODELS = """\
[models.claude]
provider = "anthropic"
base_url = "http://127.0.0.1:9"
model = "claude-sonnet-4-5"
api_key_env = "CLONECHAT_TEST_UNSET_KEY"
[models.claude.prices]
input = 3.0
output = 15.0
cached_input = 0.30
cache_write = 3.75
[models.claude.defaults]
max_tokens = 100
"""

CLAUDE_SPEC = """\
name = "study"
replicates = 5
max_turns = 6
model_a = "claude"
max_cost = 25.0

[[conditions]]
template = "clone-aware"
"""


def test_dry_run_prices_a_spec_with_and_without_caching_by_hand(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text(CLAUDE_MODELS)
    spec = tmp_path / "study.toml"
    spec.write_text(CLAUDE_SPEC)
    # No API key is set: a dry run calls no model, so it must not need one.
    result = CliRunner().invoke(app, ["batch", str(spec), "--dry-run", "--json", "--models-file", str(models)])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    (row,) = plan["conditions"]

    # By hand: each turn's prompt is the system prompt + opening ("fixed") and every earlier
    # turn at its max_tokens plus chat markup; turn t's agent spoke last at t-2, whose prompt
    # the cache holds.
    loaded = load_spec_file(spec, registry=Registry(load_registry(models)), need_keys=False)
    blueprint = loaded.conditions[0].blueprint

    def tokens(text: str) -> int:
        return len(text) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD

    fixed = (tokens(blueprint.system_a.text) + tokens(blueprint.system_b.text)) // 2 + tokens(blueprint.opening.text)
    message = 100 + MESSAGE_OVERHEAD
    prompts = [fixed + (t - 1) * message for t in range(1, 7)]
    output = 6 * 100
    plain = (sum(prompts) * 3.0 + output * 15.0) / 1e6 * 5
    cached_input = sum(
        (prompts[t - 3] * 0.30 + (prompts[t - 1] - prompts[t - 3]) * 3.75) if t > 2 else prompts[t - 1] * 3.75
        for t in range(1, 7)
    )
    cached = (cached_input + output * 15.0) / 1e6 * 5
    assert row["input_tokens"] == sum(prompts) * 5
    assert row["cost_usd"] == pytest.approx(plain)
    assert row["cost_usd_cached"] == pytest.approx(cached)
    assert plan["cost_usd_max"] == pytest.approx(plain) and plan["cost_usd_max_cached"] == pytest.approx(cached)
    assert cached < plain

    table = CliRunner().invoke(
        app, ["batch", str(spec), "--dry-run", "--models-file", str(models)], env={"COLUMNS": "220"}
    )
    assert table.exit_code == 0, table.output
    assert "with caching ≤" in table.stdout
    assert f"${plain:.2f}" in table.stdout and f"${cached:.2f}" in table.stdout


def test_dry_run_without_prices_shows_no_cost_columns(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nmodel_a = "scripted"\n[[conditions]]\ntemplate = "clone-aware"\n')
    result = CliRunner().invoke(app, ["batch", str(spec), "--dry-run", "--json"])
    assert json.loads(result.stdout)["cost_usd_max"] is None
    table = CliRunner().invoke(app, ["batch", str(spec), "--dry-run"], env={"COLUMNS": "200"})
    assert "cost" not in table.stdout


# -- stopping at a budget -------------------------------------------------------------------------

#: A scripted model priced so that each call costs about a cent: words are its tokens.
PAID_SPEC = """\
name = "paid"
replicates = 4
max_turns = 6
seed = 3
concurrency = 2
model_a = "paid"
{budget}

[models.paid]
provider = "scripted"
[models.paid.prices]
input = 100.0
output = 200.0

[[conditions]]
template = "clone-aware"
"""


def batch(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["batch", *map(str, args)])


def spent(db: DbLocation) -> tuple[float, int]:
    with raw_sql(db) as conn:
        cost, calls = conn.execute("SELECT sum(cost_usd), count(cost_usd) FROM node").fetchone()
    return float(cost or 0.0), int(calls)


@on_both_backends
def test_max_cost_stops_the_batch_keeps_every_turn_and_a_higher_budget_resumes(
    tmp_path: Path, db_path: DbLocation
) -> None:
    reference_spec = tmp_path / "free.toml"
    reference_spec.write_text(PAID_SPEC.format(budget=""))
    reference_db = tmp_path / "reference.db"
    assert batch(reference_spec, "--db", reference_db).exit_code == 0
    reference = stored_conversations(reference_db)
    total, calls = spent(reference_db)
    assert calls == 24  # every turn priced

    budget = round(total / 3, 4)  # a third of what the whole experiment costs
    spec = tmp_path / "paid.toml"
    spec.write_text(PAID_SPEC.format(budget=f"max_cost = {budget}"))
    stopped = batch(spec, "--db", db_path, "--json")
    assert stopped.exit_code == 3, stopped.output  # stopped at the budget
    summary = json.loads(stopped.stdout)
    assert summary["budget_reached"].startswith("spent $")
    assert "budget reached" in stopped.stderr
    cost_after_stop, _ = spent(db_path)
    assert budget <= cost_after_stop < total
    # Turns in flight finished; no dialogue was started after the budget was reached.
    assert statuses(db_path).get("completed", 0) < 4
    partial = stored_conversations(db_path)
    for key, path in partial.items():
        assert reference[key][: len(path)] == path  # every stored turn whole and as unbudgeted

    again = batch(spec, "--db", db_path)
    assert again.exit_code == 3 and "budget already reached" in again.output
    assert spent(db_path)[0] == cost_after_stop  # nothing ran

    resumed = batch("--resume", "paid", "--max-cost", str(round(total * 2, 2)), "--db", db_path, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["budget_reached"] is None
    assert stored_conversations(db_path) == reference
    assert spent(db_path)[0] == pytest.approx(total)


def test_a_raised_budget_in_the_spec_resumes_the_same_experiment(tmp_path: Path) -> None:
    spec, db = tmp_path / "paid.toml", tmp_path / "run.db"
    spec.write_text(PAID_SPEC.format(budget="max_tokens_total = 300"))
    first = batch(spec, "--db", db, "--json")
    assert first.exit_code == 3, first.output
    assert json.loads(first.stdout)["budget_reached"].startswith("used ")
    spec.write_text(PAID_SPEC.format(budget="max_tokens_total = 100000"))
    second = batch(spec, "--db", db, "--json")
    assert second.exit_code == 0, second.output  # a budget is not part of what the experiment is
    assert json.loads(second.stdout)["experiment"] == "paid"
    assert statuses(db) == {"completed": 4}


def test_budget_usage_errors(tmp_path: Path) -> None:
    spec = tmp_path / "paid.toml"
    spec.write_text(PAID_SPEC.format(budget="max_cost = -1"))
    refused = batch(spec, "--dry-run")
    assert refused.exit_code == 2
    assert "max_cost: Input should be greater than 0" in refused.stderr and "paid.toml:7" in refused.stderr
    spec.write_text(PAID_SPEC.format(budget=""))
    flag = batch(spec, "--max-cost", "0", "--db", tmp_path / "x.db")
    assert flag.exit_code == 2 and "--max-cost must be a positive number" in flag.stderr


def test_cost_shows_in_ls_show_and_report(tmp_path: Path) -> None:
    spec, db = tmp_path / "paid.toml", tmp_path / "run.db"
    spec.write_text(PAID_SPEC.format(budget=""))
    assert batch(spec, "--db", db).exit_code == 0
    total, _ = spent(db)
    listing = CliRunner().invoke(app, ["ls", "--db", str(db)], env={"COLUMNS": "200"})
    assert f"experiment paid spent {format_cost(total)}" in listing.stdout
    out = tmp_path / "report"
    report = CliRunner().invoke(app, ["report", "paid", "--db", str(db), "--out", str(out)])
    assert report.exit_code == 0, report.output
    text = (out / "report.md").read_text()
    assert f"Spent: **{format_cost(total)}** over 24 priced calls" in text
    with raw_sql(db) as conn:
        dialogue, cost = conn.execute("SELECT dialogue_id, cost_usd FROM node WHERE kind = 'turn' LIMIT 1").fetchone()
    shown = CliRunner().invoke(app, ["show", dialogue, "--db", str(db)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    assert any(
        math.isclose(float(part.strip("$")), cost, rel_tol=1e-3)
        for part in shown.stdout.split()
        if part.startswith("$")
    )
