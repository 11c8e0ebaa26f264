"""A stateful property test of the run database against real SQLite files.

Hypothesis drives a sequence of writes the way the production single writer makes them (one
``BEGIN IMMEDIATE`` transaction per batch): new dialogues, turns appended to a dialogue's head,
branches from any earlier node, replays of committed writes, and crashes mid-transaction (an
open transaction abandoned by a closed connection, by a Database that is never closed, or by a
process killed with SIGKILL) followed by reopening the file. A plain in-memory model says what
must be stored; after every step the invariants compare the file with it and check that the
tree is well formed.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC
from functools import cache
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import Connection

from clonechat.engine.records import AgentName, NodeRecord, new_id, other
from clonechat.read.dialogues import resolve_dialogue
from clonechat.read.paths import node_record, path_to
from clonechat.registry import ProviderPool
from clonechat.session import (
    DialogueBlueprint,
    DialogueRequest,
    blueprint,
    load_dialogue,
    store_condition,
    store_dialogue,
)
from clonechat.store import writes
from clonechat.store.database import Database

#: Characters that have bitten storage layers before: NUL, quotes, LIKE wildcards, line and
#: paragraph separators, combining marks, astral-plane emoji.
ALPHABET = "ab Z09\x00\n\t'\"%_\\;é\u0301\u2028\u200bß中😀"
contents = st.text(alphabet=ALPHABET, max_size=24)
speakers: st.SearchStrategy[AgentName] = st.sampled_from(["A", "B"])

#: The node columns a crashing writer fills in (the others are nullable or have defaults).
RAW_INSERT = (
    "INSERT INTO node (id, dialogue_id, parent_id, speaker, kind, turn_index, content, params, created_at) "
    "VALUES (?, ?, ?, ?, 'turn', ?, ?, '{}', ?)"
)

#: A writer process that dies by SIGKILL inside an open transaction, optionally after
#: committing one turn (which must survive). A tiny page cache and a large row make SQLite
#: spill uncommitted pages into the WAL file before the kill, so recovery has work to do.
CRASHING_WRITER = f"""
import json, os, signal, sqlite3, sys
plan = json.loads(sys.stdin.read())
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("PRAGMA cache_size = 1")
insert = {RAW_INSERT!r}
head = "UPDATE dialogue SET head_node_id = ? WHERE id = ?"
if plan["committed"] is not None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(insert, plan["committed"]["row"])
    conn.execute(head, (plan["committed"]["row"][0], plan["committed"]["row"][1]))
    conn.execute("COMMIT")
conn.execute("BEGIN IMMEDIATE")
for row in plan["doomed"]:
    conn.execute(insert, row)
if plan["doomed_head"] is not None:
    conn.execute(head, plan["doomed_head"])
sys.stdout.write("IN-TX")
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""

CONDITIONS = ("clone-aware", "no-frame")
EXPERIMENTS = ("adhoc", "pilot")


@cache
def plan_for(condition: str) -> DialogueBlueprint:
    """Rendering prompts reads template files; once per condition is enough."""
    return blueprint(DialogueRequest(model_a="scripted", condition=condition))


def raw_row(node: NodeRecord) -> list[object]:
    """The values of ``RAW_INSERT`` for a turn (``created_at`` formatted as SQLAlchemy stores it)."""
    created = node.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return [node.id, node.dialogue_id, node.parent_id, node.speaker, node.turn_index, node.content, created]


@dataclass
class ModelDialogue:
    """What the store must hold for one dialogue: its tree and its head."""

    id: str
    first_speaker: AgentName
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    head: str = ""

    def path(self, leaf: str | None = None) -> list[NodeRecord]:
        node: NodeRecord | None = self.nodes[leaf or self.head]
        path: list[NodeRecord] = []
        while node is not None:
            path.append(node)
            node = self.nodes[node.parent_id] if node.parent_id is not None else None
        return path[::-1]

    def child_of(self, parent: NodeRecord, content: str) -> NodeRecord:
        """The next turn after ``parent``, with the speaker the engine would pick."""
        speaker = self.first_speaker if parent.kind == "opening" else other(parent.speaker)  # type: ignore[arg-type]
        return NodeRecord(
            id=new_id(),
            dialogue_id=self.id,
            parent_id=parent.id,
            speaker=speaker,
            kind="turn",
            turn_index=parent.turn_index + 1,
            content=content,
        )


def essence(nodes: list[NodeRecord]) -> list[tuple[str, str | None, str, str, int, str]]:
    return [(n.id, n.parent_id, n.speaker, n.kind, n.turn_index, n.content) for n in nodes]


class StoreMachine(RuleBasedStateMachine):
    dialogues = Bundle("dialogues")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="clonechat-stateful-"))
        self.path = self.tmp / "runs" / "clonechat.db"
        self.db = Database.open(self.path)
        self.pool = ProviderPool()
        self.model: dict[str, ModelDialogue] = {}
        self.abandoned: list[Database] = []

    def teardown(self) -> None:
        self.db.close()
        for db in self.abandoned:
            db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------

    @contextmanager
    def raw(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, isolation_level=None, timeout=10)) as conn:
            yield conn

    def write_turns(self, dialogue: ModelDialogue, parent_id: str, texts: list[str], *, batched: bool) -> None:
        """Append a chain of turns under ``parent_id`` in one writer transaction: batched as the
        store writer commits queued node writes (one multi-row insert, then the heads), or one
        write per node (insert it, move the head to it)."""
        records: list[NodeRecord] = []
        for text in texts:
            records.append(dialogue.child_of(records[-1] if records else dialogue.nodes[parent_id], text))
        with self.db.writer_engine.begin() as conn:
            if batched:
                writes.insert_nodes_and_heads(conn, records)
            else:
                for record in records:
                    writes.insert_nodes(conn, [record])
                    writes.update_dialogue(conn, dialogue.id, head_node_id=record.id)
        dialogue.nodes.update((r.id, r) for r in records)
        dialogue.head = records[-1].id

    def doomed_turn(self, dialogue: ModelDialogue, content: str) -> NodeRecord:
        """A turn under the head that a crash will lose (it never enters the model)."""
        return dialogue.child_of(dialogue.nodes[dialogue.head], content)

    def reopen(self, *, close_old: bool) -> None:
        if close_old:
            self.db.close()
        else:
            self.abandoned.append(self.db)
        self.db = Database.open(self.path)

    # -- rules ---------------------------------------------------------------------------------

    @initialize(target=dialogues, first_speaker=speakers)
    def first_dialogue(self, first_speaker: AgentName) -> str:
        """Most rules need a dialogue; starting with one keeps Hypothesis from wasting examples."""
        return self.start_dialogue(CONDITIONS[0], EXPERIMENTS[0], first_speaker, 0, shared_condition=False)

    @rule(
        target=dialogues,
        condition=st.sampled_from(CONDITIONS),
        experiment=st.sampled_from(EXPERIMENTS),
        first_speaker=speakers,
        seed=st.integers(min_value=0, max_value=2**31 - 1),
        shared_condition=st.booleans(),
    )
    def start_dialogue(
        self, condition: str, experiment: str, first_speaker: AgentName, seed: int, shared_condition: bool
    ) -> str:
        plan = plan_for(condition)
        with self.db.writer_engine.begin() as conn:
            experiment_id = writes.ensure_experiment(conn, experiment)
            # A batch plan stores each condition once and hands it to every dialogue.
            stored_condition = store_condition(conn, plan, experiment_id) if shared_condition else None
            stored = store_dialogue(
                conn, plan, experiment_id, seed=seed, first_speaker=first_speaker, condition=stored_condition
            )
        assert stored.root.kind == "opening" and stored.root.parent_id is None
        assert stored.first_speaker == first_speaker
        dialogue = ModelDialogue(stored.dialogue_id, first_speaker, {stored.root.id: stored.root}, stored.root.id)
        self.model[dialogue.id] = dialogue
        return dialogue.id

    @rule(dialogue_id=dialogues, texts=st.lists(contents, min_size=1, max_size=3), batched=st.booleans())
    def append_turns(self, dialogue_id: str, texts: list[str], batched: bool) -> None:
        dialogue = self.model[dialogue_id]
        self.write_turns(dialogue, dialogue.head, texts, batched=batched)

    @rule(data=st.data())
    def append_across_dialogues(self, data: st.DataObject) -> None:
        """One writer batch holding the next turns of several dialogues, interleaved."""
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1, max_size=6), label="turns for")
        leaves = {d: self.model[d].nodes[self.model[d].head] for d in ids}
        records: list[NodeRecord] = []
        for dialogue_id in ids:
            record = self.model[dialogue_id].child_of(leaves[dialogue_id], data.draw(contents, label="content"))
            leaves[dialogue_id] = record
            records.append(record)
        with self.db.writer_engine.begin() as conn:
            writes.insert_nodes_and_heads(conn, records)
        for record in records:
            self.model[record.dialogue_id].nodes[record.id] = record
        for dialogue_id, leaf in leaves.items():
            self.model[dialogue_id].head = leaf.id

    @rule(
        dialogue_id=dialogues,
        data=st.data(),
        texts=st.lists(contents, min_size=1, max_size=2),
        batched=st.booleans(),
    )
    def branch(self, dialogue_id: str, data: st.DataObject, texts: list[str], batched: bool) -> None:
        dialogue = self.model[dialogue_id]
        parent_id = data.draw(st.sampled_from(sorted(dialogue.nodes)), label="branch from")
        self.write_turns(dialogue, parent_id, texts, batched=batched)

    @rule(dialogue_id=dialogues, data=st.data(), retried_content=st.none() | contents)
    def replay_committed_node(self, dialogue_id: str, data: st.DataObject, retried_content: str | None) -> None:
        """Insert an already committed node again, possibly with different content (a retry
        after a crash that regenerated the reply): the first write wins, nothing doubles."""
        dialogue = self.model[dialogue_id]
        node = dialogue.nodes[data.draw(st.sampled_from(sorted(dialogue.nodes)), label="replayed node")]
        if retried_content is not None:
            node = replace(node, content=retried_content)
        with self.db.writer_engine.begin() as conn:
            writes.insert_nodes(conn, [node])

    @rule(dialogue_id=dialogues)
    def replay_last_write(self, dialogue_id: str) -> None:
        """The last write for the dialogue again, both as a single write and as a batch, then
        the whole path re-submitted as one batch (what a resumed batch may replay)."""
        dialogue = self.model[dialogue_id]
        head = dialogue.nodes[dialogue.head]
        with self.db.writer_engine.begin() as conn:
            writes.insert_nodes(conn, [head])
            writes.update_dialogue(conn, dialogue.id, head_node_id=head.id)
            writes.insert_nodes_and_heads(conn, [head])
        with self.db.writer_engine.begin() as conn:
            writes.insert_nodes_and_heads(conn, dialogue.path())

    @rule(
        dialogue_id=dialogues,
        insert=st.booleans(),
        move_head=st.booleans(),
        orphan=st.booleans(),
        content=contents,
        close_old=st.booleans(),
    )
    def crash_raw_connection(
        self, dialogue_id: str, insert: bool, move_head: bool, orphan: bool, content: str, close_old: bool
    ) -> None:
        """A writer that opened ``BEGIN IMMEDIATE``, wrote, and went away without committing."""
        dialogue = self.model[dialogue_id]
        doomed = self.doomed_turn(dialogue, content)
        parent_id = new_id() if orphan else doomed.parent_id  # an orphan would also break foreign keys
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        conn.execute("BEGIN IMMEDIATE")
        if insert:
            conn.execute(RAW_INSERT, raw_row(replace(doomed, parent_id=parent_id)))
        if move_head:
            conn.execute("UPDATE dialogue SET head_node_id = ? WHERE id = ?", (doomed.id, dialogue.id))
        conn.close()
        self.reopen(close_old=close_old)

    @rule(dialogue_id=dialogues, content=contents, move_head=st.booleans())
    def crash_inside_database_writer(self, dialogue_id: str, content: str, move_head: bool) -> None:
        """The production write path dies mid-transaction: the connection goes away without
        commit or rollback and the Database object is never closed."""
        dialogue = self.model[dialogue_id]
        doomed = self.doomed_turn(dialogue, content)
        conn: Connection = self.db.writer_engine.connect()
        conn.begin()
        if move_head:
            writes.insert_nodes_and_heads(conn, [doomed])
        else:
            writes.insert_nodes(conn, [doomed])
        conn.invalidate()  # drops the DBAPI connection as-is
        conn.close()
        self.reopen(close_old=False)

    @rule(
        dialogue_id=dialogues,
        commit_first=st.booleans(),
        doomed_count=st.integers(min_value=0, max_value=2),
        move_head=st.booleans(),
        large=st.booleans(),
        content=contents,
    )
    def crash_killed_process(
        self, dialogue_id: str, commit_first: bool, doomed_count: int, move_head: bool, large: bool, content: str
    ) -> None:
        """Another process commits a turn (optionally), then is SIGKILLed mid-transaction."""
        dialogue = self.model[dialogue_id]
        head = dialogue.nodes[dialogue.head]
        committed = dialogue.child_of(head, content) if commit_first else None
        parent = committed or head
        doomed = [dialogue.child_of(parent, (content or "x") * (20_000 if large else 1)) for _ in range(doomed_count)]
        plan = {
            "committed": None if committed is None else {"row": raw_row(committed)},
            "doomed": [raw_row(turn) for turn in doomed],
            "doomed_head": [doomed[-1].id, dialogue.id] if move_head and doomed else None,
        }
        result = subprocess.run(
            [sys.executable, "-c", CRASHING_WRITER, str(self.path)],
            input=json.dumps(plan),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == -signal.SIGKILL, result.stderr
        assert result.stdout == "IN-TX"
        if committed is not None:
            dialogue.nodes[committed.id] = committed
            dialogue.head = committed.id
        self.reopen(close_old=True)

    @rule(dialogue_id=dialogues, data=st.data())
    def resume(self, dialogue_id: str, data: st.DataObject) -> None:
        dialogue = self.model[dialogue_id]
        prepared = load_dialogue(self.db, dialogue_id, self.pool)
        assert prepared.dialogue_id == dialogue_id
        assert prepared.settings.first_speaker == dialogue.first_speaker
        assert essence(prepared.path) == essence(dialogue.path())
        # Branching from any stored node (``leaf_id``) sees that node's ancestry.
        leaf = data.draw(st.sampled_from(sorted(dialogue.nodes)), label="resume from")
        branched = load_dialogue(self.db, dialogue_id, self.pool, leaf_id=leaf)
        assert essence(branched.path) == essence(dialogue.path(leaf))

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def file_is_sound(self) -> None:
        with self.raw() as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []

    @invariant()
    def node_counts_match_model(self) -> None:
        with self.raw() as conn:
            counts = dict(conn.execute("SELECT dialogue_id, COUNT(*) FROM node GROUP BY dialogue_id").fetchall())
            duplicates = conn.execute("SELECT id FROM node GROUP BY id HAVING COUNT(*) > 1").fetchall()
            stored_dialogues = {row[0] for row in conn.execute("SELECT id FROM dialogue")}
        assert duplicates == []
        assert stored_dialogues == set(self.model)
        assert counts == {d.id: len(d.nodes) for d in self.model.values()}

    @invariant()
    def heads_and_paths_match_model(self) -> None:
        for dialogue in self.model.values():
            row = resolve_dialogue(self.db, dialogue.id)
            assert row.head_node_id == dialogue.head
            stored = [node_record(n) for n in path_to(self.db, dialogue.head)]
            # Ids and parents as well as (speaker, turn_index, content).
            assert essence(stored) == essence(dialogue.path())

    @invariant()
    def every_stored_tree_is_well_formed(self) -> None:
        """Checked on the stored rows alone, so it holds for every path, not just the heads."""
        with self.raw() as conn:
            firsts = dict(conn.execute("SELECT id, first_speaker FROM dialogue").fetchall())
            rows = conn.execute("SELECT id, dialogue_id, parent_id, speaker, kind, turn_index FROM node").fetchall()
        nodes = {row[0]: row for row in rows}
        roots: dict[str, int] = {}
        for _id, dialogue_id, parent_id, speaker, kind, turn_index in rows:
            if parent_id is None:
                assert (speaker, kind, turn_index) == ("researcher", "opening", 0)
                roots[dialogue_id] = roots.get(dialogue_id, 0) + 1
                continue
            assert parent_id in nodes, f"{_id} has a parent that does not exist"
            _pid, parent_dialogue, _gp, parent_speaker, parent_kind, parent_index = nodes[parent_id]
            assert parent_dialogue == dialogue_id, f"{_id}'s parent is in another dialogue"
            assert kind == "turn"
            assert turn_index == parent_index + 1, f"{_id}: turn_index {turn_index} after {parent_index}"
            expected = firsts[dialogue_id] if parent_kind == "opening" else other(parent_speaker)
            assert speaker == expected, f"{_id}: {speaker} speaks after {parent_speaker}"
        assert roots == dict.fromkeys(self.model, 1)


StoreMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestStore = StoreMachine.TestCase
