"""A batch says when its concurrency outruns a backend, and its progress shows requests in
flight and queued per backend, not only dialogues "running"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clonechat.batch.capacity import capacity_notes
from clonechat.batch.spec import parse_spec
from clonechat.registry import ProviderPool, Registry
from tests.servers.fake_model import Stream, fake_model_server, openai_events
from tests.test_batch import server_spec, start_batch, write

REQUESTS = re.compile(r"requests (?P<url>\S+): (?P<in_flight>\d+) in flight, (?P<queued>\d+) queued \(limit (\d+)\)")


def test_a_batch_over_an_endpoints_connections_says_so_and_shows_the_queue(tmp_path: Path) -> None:
    # Each reply streams for about a second, so requests pile up behind the two connections.
    slow = Stream(openai_events(["a ", "slow ", "but ", "complete ", "reply"]), delay=0.15)
    with fake_model_server(slow) as server:
        text = server_spec(server, stream=True, replicates=5, turns=2)
        text = text.replace("concurrency = 1", "concurrency = 5").replace("idle_timeout = 60", "max_connections = 2")
        spec, db = write(tmp_path / "srv.toml", text), tmp_path / "r.db"
        proc = start_batch(spec, "--db", db, "--progress-interval", "0.3")
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"note: {server.url}/v1: 5 dialogues in flight share max_connections = 2" in out
    loads = [m for m in REQUESTS.finditer(out) if m["url"] == f"{server.url}/v1"]
    assert loads, out
    assert max(int(m["in_flight"]) for m in loads) <= 2
    # While five dialogues wanted the model, three of them waited: the progress said so.
    assert max(int(m["queued"]) for m in loads) >= 1, out


def test_a_batch_within_its_backends_prints_no_note(tmp_path: Path) -> None:
    with fake_model_server(Stream(openai_events(["fine"]))) as server:
        text = server_spec(server, stream=True, replicates=2, turns=1).replace("concurrency = 1", "concurrency = 2")
        spec, db = write(tmp_path / "srv.toml", text), tmp_path / "r.db"
        proc = start_batch(spec, "--db", db)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "note:" not in out


EMBEDDED = """\
name = "long"
replicates = {replicates}
max_turns = 20
seed = 1
concurrency = {concurrency}
model_a = "local"

[[conditions]]
template = "clone-aware"
"""


@pytest.mark.model
@pytest.mark.parametrize(("concurrency", "noted"), [(4, False), (16, True)])
def test_the_embedded_model_says_when_its_views_outgrow_the_kv_budget(concurrency: int, noted: bool) -> None:
    # 20 turns of up to 200 tokens: ~4,400 tokens a view, ~100 MB of SmolLM2 KV state; two views
    # a dialogue. Four dialogues fit the default 2 GiB; sixteen do not.
    text = EMBEDDED.format(replicates=concurrency, concurrency=concurrency)
    loaded = parse_spec(text, "long.toml", registry=Registry())
    pool = ProviderPool()
    notes = capacity_notes(loaded.conditions, [c.name for c in loaded.conditions] * concurrency, concurrency, pool)
    if noted:
        [note] = notes
        assert note.startswith(f"SmolLM2-135M-Instruct-Q4_1: {2 * concurrency} agent views of up to ")
        assert "views will be dropped and re-evaluated" in note
    else:
        assert notes == []
