"""The self-contained HTML report: the writer on a hand-built document (every block kind, the
inline marks, escaping, no reference to anything outside the page, inline SVG), its size and
laziness at 1,000 dialogues, and the data it embeds read from a real experiment (the scripted
model through ``clonechat batch``, with predictions, coordination, reports back and a
researcher's fork): the transcripts (:mod:`clonechat.analysis.transcripts`) and the provenance
(:mod:`clonechat.analysis.provenance`), on SQLite and PostgreSQL. The last tests open the page
in a real Chromium and compare the HTML report with the Markdown one, table by table."""

from __future__ import annotations

import itertools
import json
import random
import re
import sqlite3
import subprocess
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import replace
from html.parser import HTMLParser
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner, Result

from clonechat.analysis.document import (
    Bullets,
    Code,
    Document,
    Paragraph,
    Plot,
    Quote,
    Section,
    Table,
    Transcripts,
)
from clonechat.analysis.provenance import (
    NOT_A_CHECKOUT,
    Provenance,
    compact_seeds,
    git_commit,
    load_provenance,
    provenance_section,
    redacted_spec,
)
from clonechat.analysis.report_html import DATA_ID, inline, render_html, table_html
from clonechat.analysis.transcripts import load_transcripts
from clonechat.branching import EDIT_MODEL, fork_with_edit
from clonechat.cli import app
from clonechat.location import DbLocation
from clonechat.read import transcripts as read_transcripts
from clonechat.read.connect import open_reader
from clonechat.read.dialogues import resolve_dialogue
from clonechat.read.paths import dialogue_path
from clonechat.store.database import Database
from clonechat.tui.live import LiveDialogue, UiEvent
from tests.helpers import raw_sql
from tests.test_scoring import CONDITIONS, DIALOGUES, EXPERIMENT, REPLICATES, SPEC, TURNS

#: Text that would run as a script, end the JSON's <script> or open a comment if not escaped.
EVIL = '</script><script>alert("pwned")</script><!-- <img src=x onerror=alert(1)> & https://evil.example/'
#: Planted in a node's private reasoning: it must never reach a page.
SECRET_REASONING = "PRIVATE-REASONING-MARKER-7f3a"
FORK_TEXT = "A researcher's edit: " + EVIL


# -- a hand-built document ------------------------------------------------------------------


def figure() -> Figure:
    fig = Figure(figsize=(4, 2.5))
    ax = fig.add_subplot()
    ax.plot([1, 2, 3], [0.2, 0.5, 0.4], marker="o", label="clone-aware")
    ax.plot([1, 2, 3], [0.3, 0.3, 0.3], linestyle="--", label="shuffled")
    ax.set_title("Accuracy <by> turn & more")
    ax.legend()
    return fig


def node(
    node_id: str, parent: str | None, speaker: str, kind: str, turn: int, text: str, **extra: object
) -> dict[str, object]:
    return {"id": node_id, "p": parent, "s": speaker, "k": kind, "t": turn, "c": text, **extra}


def forked_dialogue(dialogue_id: str = "01HANDBUILT000000000000001") -> dict[str, object]:
    """Opening, A's turn 1 (predicted by B), B's turn 2 and its researcher edit (a fork at turn
    1), A's turn 3 under the edit (the current conversation), coordination answers and a report."""
    nodes = [
        node("n0", None, "researcher", "opening", 0, "Begin."),
        node("c1", "n0", "A", "coordination", 1, "I pick 7.", v="number@before", a="7"),
        node("n1", "n0", "A", "turn", 1, "Hello, copy of me. " + EVIL),
        node("p1", "n0", "B", "prediction", 1, "Hello there.", v="partner", tg="n1", sc={"chrf": [0.41, 0.2]}),
        node("n2", "n1", "B", "turn", 2, "The original turn 2."),
        node("n2e", "n1", "B", "turn", 2, FORK_TEXT, m=EDIT_MODEL, e={"temperature": 1.3}),
        node("n3", "n2e", "A", "turn", 3, "Turn 3 after the edit."),
        node("r1", "n3", "A", "report", 4, "It felt like talking to a mirror."),
    ]
    return {
        "id": dialogue_id,
        "cond": "clone-aware",
        "rep": 1,
        "status": "completed",
        "stop": "max_turns",
        "ma": "scripted",
        "mb": "scripted",
        "seed": 7,
        "first": "A",
        "turns": 3,
        "path": ["n0", "n1", "n2e", "n3"],
        "nodes": nodes,
    }


def plain_dialogue(dialogue_id: str = "01HANDBUILT000000000000002") -> dict[str, object]:
    nodes = [node("m0", None, "researcher", "opening", 0, "Begin."), node("m1", "m0", "B", "turn", 1, "Hi.")]
    return {**forked_dialogue(dialogue_id), "rep": 2, "turns": 1, "first": "B", "path": ["m0", "m1"], "nodes": nodes}


def document(dialogues: Sequence[object] | None = None) -> Document:
    transcripts = [forked_dialogue(), plain_dialogue()] if dialogues is None else dialogues
    return Document(
        title="Clonechat report: **hand-built**",
        facts=["Experiment: `hand-built`", "Control condition: *none*"],
        sections=[
            Section("How to read this", [Paragraph("A **strong** word, `code <here>`, an *emphasis* and 2 * 3 * 4.")]),
            Section(
                "Conditions",
                [
                    Table(
                        ["Condition", "Pairing", "Dialogues", "Accuracy [95% CI]"],
                        [
                            ["clone-aware (control)", "**cross-model**", "10", "0.412 [0.30, 0.52]"],
                            ["x", "clone", "2", "—"],
                        ],
                    )
                ],
            ),
            Section(
                "Prediction accuracy",
                [
                    Bullets(["a finding with *emphasis*", "another"], title="Findings:"),
                    Plot("by_turn", "Accuracy by turn (dashed: *shuffled*)", figure),
                    Plot("by_turn_2", "The same, again", figure),
                    Section("Scorer: chrf", [Paragraph("Nested.")], level=3),
                ],
            ),
            Section(
                "Reports back",
                [
                    Section(
                        "clone-aware",
                        [Quote("**`01HANDBU`** · scripted", "First paragraph " + EVIL + "\n\nSecond.")],
                        level=3,
                    )
                ],
            ),
            Section("Transcripts", [Paragraph("Open one."), Transcripts(transcripts)]),
            Section("Appendix: experiment spec", [Code('name = "hand-built"\nnote = "<script>"', "toml")]),
        ],
    )


class Markup(HTMLParser):
    """Every start tag with its attributes, the text inside each kind of element, and whether
    every element that is opened is closed in order (void elements aside)."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "col", "wbr"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.unbalanced: list[str] = []
        self.script_text: list[str] = []
        self.text_by_id: dict[str, str] = {}
        self.sections: list[tuple[str, str]] = []  # (id, its first heading's text)
        self.headings: list[tuple[str, str]] = []  # (tag, text)
        self.tables: list[list[list[str]]] = []
        self._heading: tuple[str, list[str]] | None = None
        self._cell: list[str] | None = None
        self._section_waiting: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)
        attributes = dict(attrs)
        if tag == "section":
            self._section_waiting = attributes.get("id") or ""
        if tag in ("h1", "h2", "h3", "h4"):
            self._heading = (tag, [])
        if tag == "table":
            self.tables.append([])
        if tag == "tr" and self.tables:
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.unbalanced.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if self._heading is not None and tag == self._heading[0]:
            text = " ".join("".join(self._heading[1]).split())
            self.headings.append((tag, text))
            if self._section_waiting is not None and tag == "h2":
                self.sections.append((self._section_waiting, text))
                self._section_waiting = None
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "script":
            self.script_text.append(data)
        if self._heading is not None:
            self._heading[1].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def attributes(self, name: str) -> list[str]:
        return [str(a[name]) for _, a in self.tags if name in a]

    def of_class(self, cls: str) -> list[dict[str, str | None]]:
        return [a for _, a in self.tags if cls in (a.get("class") or "").split()]


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(document())


def data_json(page: str, source: str = DATA_ID) -> Any:
    match = re.search(rf'<script type="application/json" id="{source}">(.*?)</script>', page, re.DOTALL)
    assert match, source
    return json.loads(match.group(1))


def test_a_complete_page_with_every_section_linked_from_the_contents(page: str) -> None:
    assert page.startswith("<!doctype html>\n")
    assert '<meta charset="utf-8">' in page and "<style>" in page and "<script>" in page
    assert "<title>Clonechat report: hand-built</title>" in page
    markup = Markup(page)
    assert markup.unbalanced == [] and markup.stack == []
    top = ["How to read this", "Conditions", "Prediction accuracy", "Reports back", "Transcripts"]
    assert [title for _, title in markup.sections] == [*top, "Appendix: experiment spec"]
    anchors = [anchor for anchor, _ in markup.sections]
    assert anchors == ["how-to-read-this", "conditions", "prediction-accuracy", "reports-back", "transcripts",
                       "appendix-experiment-spec"]  # fmt: skip
    links = markup.attributes("href")
    assert [f"#{a}" for a in anchors] == [link for link in links if link[1:] in anchors]
    ids = set(markup.attributes("id"))
    assert all(link[1:] in ids for link in links), "a contents link to nothing"
    # Subsections are linked too, under ids of their own (the two "clone-aware"-like titles differ).
    assert "#prediction-accuracy-scorer-chrf" in links and "#reports-back-clone-aware" in links
    assert ("h3", "Scorer: chrf") in markup.headings
    assert ("h1", "Clonechat report: hand-built") in markup.headings


def test_nothing_points_outside_the_page(page: str) -> None:
    for forbidden in ("http://", "https://", "//cdn", "xmlns", "<?xml", "<!DOCTYPE svg", "<metadata", "xlink:"):
        assert forbidden not in page, forbidden
    markup = Markup(page)
    for name in ("href", "src", "action", "srcset", "poster", "data"):
        for value in markup.attributes(name):
            assert value.startswith("#"), (name, value)
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?(?!#)", page.replace('href="#', "")), "an attribute points out"
    assert "@import" not in page and "url(" not in page.replace("url(#", "")


def test_every_block_kind(page: str) -> None:
    markup = Markup(page)
    # Table: a header row and right-aligned figures (a dash does not make a column text).
    assert markup.tables[0] == [
        ["Condition", "Pairing", "Dialogues", "Accuracy [95% CI]"],
        ["clone-aware (control)", "cross-model", "10", "0.412 [0.30, 0.52]"],
        ["x", "clone", "2", "—"],
    ]
    assert '<th class="num" scope="col">Dialogues</th>' in page
    assert '<td class="num">0.412 [0.30, 0.52]</td>' in page and '<td class="num">—</td>' in page
    assert "<td>clone-aware (control)</td>" in page and "<td><strong>cross-model</strong></td>" in page
    assert "<thead>" in page and "<tbody>" in page
    # Bullets with their lead line.
    assert '<p class="lead">Findings:</p>\n<ul>\n<li>a finding with <em>emphasis</em></li>' in page
    # Quote: the heading line with its marks, the model's text as it is, in paragraphs.
    assert '<blockquote><p class="quote-heading"><strong><code>01HANDBU</code></strong> · scripted</p>' in page
    assert "<p>Second.</p></blockquote>" in page
    # Code.
    assert (
        '<pre><code class="language-toml">name = &quot;hand-built&quot;\nnote = &quot;&lt;script&gt;&quot;</code></pre>'
        in page
    )
    # Plot: inline SVG in a figure with its caption.
    assert page.count("<figure>") == 2 and page.count("<svg ") == 2
    assert "<figcaption>Accuracy by turn (dashed: <em>shuffled</em>)</figcaption>" in page
    # Transcripts: one closed <details> per dialogue, bodies empty.
    details = markup.of_class("transcript")
    assert [d["data-dialogue"] for d in details] == ["01HANDBUILT000000000000001", "01HANDBUILT000000000000002"]
    assert page.count('<div class="transcript-body"></div>') == 2
    assert "<summary>clone-aware · replicate 1 · 01HANDBU · completed · 3 turns · forked</summary>" in page
    assert "<summary>clone-aware · replicate 2 · 01HANDBU · completed · 1 turn</summary>" in page


def test_figures_are_right_aligned_and_hashes_and_dates_are_not() -> None:
    rows = [
        ["`6bad7e198c97`", "2025-01-02", "0.5 [0.1, 0.9]", "1e-05", "n/a"],
        ["`d5724ce1aa8a`", "2025-01-03", "12%", "-3", "7"],
    ]
    html = table_html(Table(["hash", "date", "mean", "p", "n"], rows))
    assert re.findall(r"<th( class=\"num\")? scope", html) == ["", "", ' class="num"', ' class="num"', ' class="num"']


def test_inline_marks_are_applied_after_escaping() -> None:
    assert inline("**a** *b* `c` plain") == "<strong>a</strong> <em>b</em> <code>c</code> plain"
    assert inline("`**not bold** <x>`") == "<code>**not bold** &lt;x&gt;</code>"
    assert inline("2 * 3 * 4 and a*b*c") == "2 * 3 * 4 and a*b*c"
    assert inline("<b>&amp;</b>") == "&lt;b&gt;&amp;amp;&lt;/b&gt;"
    assert inline("**<i>x</i>**") == "<strong>&lt;i&gt;x&lt;/i&gt;</strong>"


def test_text_and_transcripts_cannot_inject_markup(page: str) -> None:
    # One inline script and the data blocks: the model's "</script><script>" opened none.
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<script>alert" not in page and "<!-- <img" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(&quot;pwned&quot;)" in page  # the quote, escaped
    markup = Markup(page)
    assert markup.unbalanced == []
    assert not [a for _, a in markup.tags if any(k.startswith("on") for k in a)], "an event handler attribute"
    # The JSON keeps the text exactly; "<" is \u003c and "/" is \/ inside it.
    raw = re.search(rf'id="{DATA_ID}">(.*?)</script>', page, re.DOTALL)
    assert raw and "<" not in raw.group(1) and "\\u003c\\/script>" in raw.group(1)
    assert data_json(page) == [forked_dialogue(), plain_dialogue()]
    # No transcript is rendered in the markup: the script builds one when it is opened.
    assert 'class="turn' not in page.split("<script>")[0] and not markup.of_class("turn")


def test_svg_is_inline_clean_and_deterministic(page: str) -> None:
    svgs = re.findall(r"<svg .*?</svg>", page, re.DOTALL)
    assert len(svgs) == 2
    first, second = svgs
    assert first.startswith(
        '<svg id="fig1-svg" class="plot" role="img" aria-label="Accuracy by turn (dashed: shuffled)"'
    )
    assert "<text" in first  # text stays text (svg.fonttype none), not glyph paths
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "two figures share an id"
    for svg, prefix in ((first, "fig1-"), (second, "fig2-")):
        for ref in re.findall(r'href="#([^"]+)"', svg) + re.findall(r"url\(#([^)]+)\)", svg):
            assert ref.startswith(prefix) and f'id="{ref}"' in svg, ref
    assert "Accuracy &lt;by&gt; turn &amp; more" in first
    assert render_html(document()) == page  # same document, same bytes


def test_a_second_transcripts_block_gets_its_own_data() -> None:
    doc = document()
    extra = Section("More transcripts", [Transcripts([plain_dialogue("01HANDBUILT000000000000003")])])
    page = render_html(Document(doc.title, doc.facts, [*doc.sections, extra]))
    assert len(data_json(page)) == 2 and len(data_json(page, f"{DATA_ID}-2")) == 1
    assert f'<div class="transcripts" data-source="{DATA_ID}-2">' in page


def test_a_page_without_transcripts_has_no_script() -> None:
    page = render_html(Document("Plain", sections=[Section("Only", [Paragraph("Text.")])]))
    assert "<script" not in page and '<section id="only">' in page


# -- 1,000 dialogues ----------------------------------------------------------------------------

WORDS = ("the", "a", "copy", "mirror", "predict", "partner", "I", "you", "we", "talk", "same", "model", "next", "say")
GRADED = ("chrf", "token_f1")
SCORERS = ("asks_question", "chrf", "ends_dialogue", "exact", "first_word", "length_bucket", "normalised", "token_f1")


def synthetic_dialogue(index: int, rng: random.Random, turns: int = 12, chars: int = 300) -> dict[str, object]:
    """A dialogue as load_transcripts makes one: opening, ``turns`` turns of about ``chars``
    characters, a partner and a self prediction of each (8 scorers), 8 coordination answers and
    2 reports back."""

    def text(length: int) -> str:
        out = ""
        while len(out) < length:
            out += rng.choice(WORDS) + " "
        return out.strip()

    dialogue_id = f"01SYNTH{index:019d}"
    nodes = [node(f"{dialogue_id}-0", None, "researcher", "opening", 0, "The conversation begins now.")]
    path = [nodes[0]["id"]]
    for t in range(1, turns + 1):
        speaker, parent = "AB"[t % 2 == 0], path[-1]
        turn_id = f"{dialogue_id}-{t}"
        nodes.append(node(turn_id, parent, speaker, "turn", t, text(chars)))
        for variant, by in (("partner", "BA"[t % 2 == 0]), ("self", speaker)):
            scores = {s: [round(rng.random(), 4), round(rng.random(), 4)] if s in GRADED else
                      [rng.randint(0, 1), rng.randint(0, 1)] for s in SCORERS}  # fmt: skip
            nodes.append(
                node(
                    f"{turn_id}{variant[0]}", parent, by, "prediction", t, text(chars), v=variant, tg=turn_id, sc=scores
                )
            )
        path.append(turn_id)
    for phase, anchor in (("before", path[0]), ("after", path[-1])):
        for task in ("number", "pair"):
            for agent in "AB":
                nodes.append(node(f"{dialogue_id}{task}{phase}{agent}", anchor, agent, "coordination", 1, "I pick 7.",
                                  v=f"{task}@{phase}", a="7"))  # fmt: skip
    for agent in "AB":
        nodes.append(node(f"{dialogue_id}r{agent}", path[-1], agent, "report", turns + 1, text(800)))
    facts = {"status": "completed", "stop": "max_turns", "ma": "scripted", "mb": "scripted", "first": "A"}
    condition = ("clone-aware", "no-frame")[index % 2]
    return {"id": dialogue_id, "cond": condition, "rep": index // 2 + 1, **facts, "seed": 1000 + index,
            "turns": turns, "path": path, "nodes": nodes}  # fmt: skip


def test_a_thousand_dialogues_embed_as_data_and_render_nothing_up_front() -> None:
    rng = random.Random(2024)
    dialogues = [synthetic_dialogue(i, rng) for i in range(1000)]
    text_chars = sum(len(str(n["c"])) for d in dialogues for n in d["nodes"])  # type: ignore[attr-defined]
    started = time.perf_counter()
    page = render_html(document(dialogues))
    seconds = time.perf_counter() - started
    size = len(page.encode("utf-8"))
    print(
        f"\n1,000 dialogues x 12 turns (+24 predictions, 8 answers, 2 reports each): page {size / 1e6:.1f} MB, "
        f"of which model text {text_chars / 1e6:.1f} MB ({size / text_chars:.2f}x), {size / 1000 / 1e3:.1f} kB a "
        f"dialogue; rendered in {seconds:.2f} s"
    )
    # The page is the model text plus a modest overhead per dialogue (47 nodes: their ids and
    # keys, 16 scores a prediction), not markup per message.
    overhead = (size - text_chars) / len(dialogues)
    print(f"overhead beyond the model text: {overhead / 1e3:.1f} kB a dialogue")
    assert overhead < 14_000
    assert seconds < 20
    assert page.count('<details class="transcript"') == 1000
    assert page.count('<div class="transcript-body"></div>') == 1000  # every body empty until opened
    before_data = page.split('<script type="application/json"')[0]
    assert 'class="turn' not in before_data and 'class="prediction' not in before_data
    assert len(before_data.encode("utf-8")) < 400_000  # what the browser lays out on load
    assert data_json(page)[999]["id"] == dialogues[999]["id"]


# -- a real experiment ----------------------------------------------------------------------------


def cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [*map(str, args)])


async def _ignore(_event: UiEvent) -> None:
    pass


async def _fork_and_continue(location: DbLocation, dialogue_id: str) -> str:
    """Fork the dialogue's turn 2 with a researcher's edit and continue from it (the edit's
    branch becomes the current conversation); the edit's id."""
    db = Database.open(location)
    try:
        path = dialogue_path(db, resolve_dialogue(db, dialogue_id))
        fork = await fork_with_edit(db, path[2].id, FORK_TEXT, params={"temperature": 0.5})
        await LiveDialogue(db, _ignore).resume(dialogue_id, leaf_id=fork.id)
        return fork.id
    finally:
        db.close()


def build_experiment(folder: Path, location: DbLocation) -> tuple[str, str]:
    """test_scoring's experiment (2 conditions x 3 replicates x 4 turns; partner and self
    predictions, two coordination tasks before and after, reports back) with a fork of the
    first dialogue of ``base``, scored, and a marker planted in one node's private reasoning.
    The forked dialogue's id and the edit's id."""
    spec = folder / f"{EXPERIMENT}.toml"
    spec.write_text(SPEC)
    result = cli("batch", spec, "--db", location, "--json")
    assert result.exit_code == 0, result.output
    with raw_sql(location) as conn:
        (dialogue_id,) = conn.execute(
            "SELECT d.id FROM dialogue d JOIN condition c ON c.id = d.condition_id "
            "WHERE c.name = 'base' AND d.replicate = 1"
        ).one()
    edit_id = anyio.run(_fork_and_continue, location, dialogue_id)
    scored = cli("score", EXPERIMENT, "--db", location)
    assert scored.exit_code == 0, scored.output
    with raw_sql(location) as conn:
        conn.execute(
            "UPDATE node SET reasoning = :r WHERE id = (SELECT min(id) FROM node WHERE kind = 'turn')",
            {"r": SECRET_REASONING},
        )
    return str(dialogue_id), str(edit_id)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    folder = tmp_path_factory.mktemp("html-report")
    db = folder / "runs.db"
    dialogue_id, edit_id = build_experiment(folder, db)
    return db, dialogue_id, edit_id


@pytest.fixture
def db_copy(experiment: tuple[Path, str, str], tmp_path: Path) -> Path:
    """A private copy of the experiment's database (``report`` scores, so it writes)."""
    copy = tmp_path / "runs.db"
    with closing(sqlite3.connect(experiment[0])) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    return copy


def loaded(location: DbLocation) -> tuple[list[dict[str, Any]], Provenance]:
    with open_reader(location) as reader:
        assert reader is not None
        return [dict(d) for d in load_transcripts(reader, EXPERIMENT)], load_provenance(reader, EXPERIMENT)


def query(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return list(conn.execute(sql, params).fetchall())


def by_id(dialogue: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in dialogue["nodes"]}


def test_transcripts_of_a_real_experiment(experiment: tuple[Path, str, str]) -> None:
    db, forked_id, edit_id = experiment
    transcripts, _ = loaded(db)
    assert len(transcripts) == DIALOGUES
    assert [(d["cond"], d["rep"]) for d in transcripts] == [(c, r) for c in ("base", "aware") for r in (1, 2, 3)]
    text = json.dumps(transcripts)
    assert SECRET_REASONING not in text and "reasoning" not in text
    stored = {
        row[0]: row[1:] for row in query(db, "SELECT id, seed, status, first_speaker, head_node_id FROM dialogue")
    }
    for dialogue in transcripts:
        nodes = by_id(dialogue)
        seed, status, first, head = stored[dialogue["id"]]
        assert (dialogue["seed"], dialogue["status"], dialogue["first"]) == (seed, status, first)
        assert dialogue["ma"] == dialogue["mb"] == "scripted" and dialogue["stop"] == "max_turns"
        path = dialogue["path"]
        assert nodes[path[0]]["k"] == "opening" and "p" not in nodes[path[0]] and path[-1] == head
        assert all(nodes[b]["p"] == a for a, b in itertools.pairwise(path))
        assert dialogue["turns"] == nodes[head]["t"] == TURNS
        assert (
            len(dialogue["nodes"]) == query(db, "SELECT count(*) FROM node WHERE dialogue_id = ?", dialogue["id"])[0][0]
        )
        kinds = [n["k"] for n in dialogue["nodes"]]
        assert kinds.count("coordination") == 2 * 2 * 2 and kinds.count("report") == 2
        for n in dialogue["nodes"]:
            assert set(n) <= {"id", "p", "s", "k", "t", "c", "m", "v", "tg", "err", "e", "sc", "a"}
            if n["k"] == "prediction":
                assert n["v"] in ("partner", "self") and nodes[n["tg"]]["k"] == "turn"
                assert set(n["sc"]) >= {"chrf", "token_f1"} and all(len(pair) == 2 for pair in n["sc"].values())
            if n["k"] == "coordination":
                assert n["v"].split("@")[1] in ("before", "after") and "a" in n
    # Scores are the ones in force, the shuffled control's beside them.
    in_force = query(
        db, "SELECT prediction_id, scorer, value, shuffled_value FROM v_prediction WHERE scorer IS NOT NULL"
    )
    nodes = {n["id"]: n for d in transcripts for n in d["nodes"]}
    assert len(in_force) > 100
    for prediction_id, scorer, value, shuffled in in_force:
        got = nodes[prediction_id]["sc"][scorer]
        assert got[0] == pytest.approx(value, abs=1e-4) and (
            shuffled is None or got[1] == pytest.approx(shuffled, abs=1e-4)
        )
    answers = dict(query(db, "SELECT node_id, json_extract(detail, '$.answer') FROM v_score WHERE scorer = 'answer'"))
    assert answers and all(nodes[node_id]["a"] == answer for node_id, answer in answers.items())
    # The fork: the edit is a sibling of the original turn 2 and the current conversation runs through it.
    forked = next(d for d in transcripts if d["id"] == forked_id)
    fork_nodes = by_id(forked)
    edit = fork_nodes[edit_id]
    assert edit["m"] == EDIT_MODEL == read_transcripts.EDIT_MODEL and edit["e"] == {"temperature": 0.5}
    assert edit["c"] == FORK_TEXT and edit_id in forked["path"]
    siblings = [n for n in forked["nodes"] if n.get("p") == edit["p"] and n["k"] == "turn"]
    assert len(siblings) == 2
    assert len([n for n in forked["nodes"] if n["k"] == "turn"]) == TURNS + 3  # the original turns 2-4, the new 2-4
    assert not any("e" in n for d in transcripts for n in d["nodes"] if n["id"] != edit_id)


def test_the_page_of_a_real_experiment(experiment: tuple[Path, str, str]) -> None:
    db, forked_id, _ = experiment
    transcripts, provenance = loaded(db)
    page = render_html(
        Document(
            "Report", sections=[Section("Transcripts", [Transcripts(transcripts)]), provenance_section(provenance)]
        )
    )
    assert SECRET_REASONING not in page
    assert "http://" not in page and "https://" not in page and "src=" not in page  # the edit's text has them
    summary = f"base · replicate 1 · {forked_id[:8]} · completed · 4 turns · forked"
    assert f'<details class="transcript" data-dialogue="{forked_id}"><summary>{summary}</summary>' in page
    assert data_json(page) == json.loads(json.dumps(transcripts))


def test_provenance_of_a_real_experiment(experiment: tuple[Path, str, str]) -> None:
    db, _, _ = experiment
    _, p = loaded(db)
    assert p.experiment == EXPERIMENT and p.clonechat_version == version("clonechat")
    assert p.git_commit == NOT_A_CHECKOUT or re.fullmatch(r"[0-9a-f]{40}( \(with uncommitted changes\))?", p.git_commit)
    assert p.experiment_seed == 11
    assert [c.name for c in p.conditions] == ["base", "aware"] and len(p.conditions) == CONDITIONS
    seeds = query(db, "SELECT c.name, d.replicate, d.seed FROM dialogue d JOIN condition c ON c.id = d.condition_id")
    for condition in p.conditions:
        assert sorted(condition.seeds) == sorted((r, s) for c, r, s in seeds if c == condition.name)
        assert len(condition.seeds) == REPLICATES
        assert [a.agent for a in condition.agents] == ["A", "B"]
        for agent in condition.agents:
            assert agent.model == "scripted" and any("temperature=" in params for params in agent.params)
            assert agent.recorded and all(r.startswith("scripted (") for r in agent.recorded)
        roles = dict(condition.prompts)
        assert {"system A", "system B", "opening", "prediction (partner)", "prediction (self)", "report back"} <= set(
            roles
        )
        assert "coordination (number)" in roles and "coordination (pair)" in roles
        assert all(re.fullmatch(r"[0-9a-f]{12}", h) for hashes in roles.values() for h in hashes)
    hashes = {h for (h,) in query(db, "SELECT substr(system_prompt_a, 1, 12) FROM dialogue")}
    assert hashes == {h for c in p.conditions for h in dict(c.prompts)["system A"]}
    assert p.first_stored is not None and p.last_stored is not None and p.first_stored <= p.last_stored
    assert p.spec == SPEC  # nothing private in this spec: shown as written


def test_provenance_shows_no_path_address_or_key(experiment: tuple[Path, str, str], tmp_path: Path) -> None:
    from clonechat.analysis.report_markdown import _Writer

    db, _, _ = experiment
    _, p = loaded(db)
    private_spec = (
        SPEC + '\n[models.server]\nprovider = "openai-compatible"\nbase_url = "http://10.1.2.3:8000/v1"\n'
        'model = "meta-llama/Llama-3.1-8B-Instruct"\napi_key_env = "LAB_SECRET_KEY"\n'
        "chat_template = 'models/x.gguf'  # from /home/someone/models/x.gguf\n"
        'inline = { base_url = "https://api.example.com", model = "m" }\n'
    )
    from datetime import datetime

    from clonechat.analysis.data import ReportData
    from clonechat.analysis.report import appendix_section

    # The reproducibility section, and the appendix that shows the spec.
    sections = [
        provenance_section(replace(p, spec=private_spec)),
        appendix_section(ReportData("x", datetime(2026, 1, 1), private_spec, None, [])),
    ]
    markdown = "\n".join(line for section in sections for line in _Writer(tmp_path).section(section))
    page = render_html(Document("Provenance", sections=sections))
    for text in (markdown, page):
        for leak in ("10.1.2.3", "LAB_SECRET_KEY", "models/x.gguf", "/home/someone", "api.example.com", "http",
                     str(Path.cwd()), str(Path.home()), str(db.parent), str(Path(__file__).parent.parent)):  # fmt: skip
            assert leak not in text, leak
        assert "meta-llama/Llama-3.1-8B-Instruct" in text  # the model's id is the experiment's, and kept
    for title in ("Models and parameters", "Prompts", "Seeds"):
        assert f"### {title}" in markdown
    assert "| clonechat version |" in markdown and "| git commit |" in markdown


def test_redacted_spec_keeps_the_experiment_and_drops_the_machine() -> None:
    spec = (
        'name = "x"  # notes: see ~/notes/x.md\nseed = 3\n[models.m]\nbase_url = "http://127.0.0.1:8000/v1"\n'
        'api_key_env = \'VLLM_KEY\'\nmodel = "org/name"\nchat_template = "/opt/models/a.gguf"\n'
    )
    assert redacted_spec(spec) == (
        'name = "x"  # notes: see (path not shown)\nseed = 3\n[models.m]\nbase_url = "(not shown)"\n'
        'api_key_env = "(not shown)"\nmodel = "org/name"\nchat_template = "(not shown)"\n'
    )


def test_compact_seeds() -> None:
    assert compact_seeds([(1, 7), (2, 8), (3, 9)]) == "replicates 1–3: seeds 7–9"
    assert compact_seeds([(2, 20389298), (1, 840182532)]) == "1: 840182532, 2: 20389298"
    assert compact_seeds([(1, None)]) == "not recorded"
    assert compact_seeds([(1, 5), (2, None)]) == "1: 5 (1 without a seed)"


def test_git_commit_of_a_checkout_and_of_a_plain_folder(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_commit(plain) == NOT_A_CHECKOUT
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("")

    def git(*args: str) -> str:
        command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    untracked = git_commit(repo / "pkg")
    assert untracked == NOT_A_CHECKOUT  # no commit yet
    git("add", ".")
    git("commit", "-q", "-m", "x")
    sha = git("rev-parse", "HEAD")
    assert git_commit(repo / "pkg") == sha
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    assert git_commit(repo / "pkg") == f"{sha} (with uncommitted changes)"
    installed = repo / "venv" / "site-packages" / "pkg"  # a copy inside some repository, untracked
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    assert git_commit(installed) == NOT_A_CHECKOUT


# -- PostgreSQL ---------------------------------------------------------------------------------


def shape(transcripts: Sequence[Mapping[str, Any]]) -> list[Any]:
    """What must be the same on either backend: ids differ, and so may the order of nodes
    stored in the same moment (both agents' coordination answers) and the shuffled controls."""
    return [
        (d["cond"], d["rep"], d["seed"], d["status"], d["turns"], len(d["path"]),
         sorted(json.dumps([n["k"], n["s"], n["t"], n["c"], n.get("v"), sorted(n.get("sc", {})), n.get("a"),
                            n.get("e")]) for n in d["nodes"]))
        for d in transcripts
    ]  # fmt: skip


@pytest.mark.postgresql
def test_the_same_on_postgresql(experiment: tuple[Path, str, str], pg_url: str, tmp_path: Path) -> None:
    build_experiment(tmp_path, pg_url)
    on_server, server_provenance = loaded(pg_url)
    on_file, file_provenance = loaded(experiment[0])
    assert shape(on_server) == shape(on_file)
    assert SECRET_REASONING not in json.dumps(on_server)
    for a, b in zip(server_provenance.conditions, file_provenance.conditions, strict=True):
        assert (a.name, a.agents, a.prompts, a.seeds) == (b.name, b.agents, b.prompts, b.seeds)
    assert server_provenance.first_stored is not None and server_provenance.first_stored.tzinfo is not None


# -- in a browser ---------------------------------------------------------------------------------


@pytest.mark.browser
def test_transcripts_open_with_forks_side_channels_and_no_injection(chromium: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from tests.browser import open_page

    html = tmp_path / "report.html"
    html.write_text(render_html(document()), encoding="utf-8")
    with open_page(chromium, html) as (page, records):
        first = page.locator("details.transcript").first
        expect(first.locator(".transcript-body > *")).to_have_count(0)
        first.locator("summary").click()
        body = first.locator(".transcript-body")
        expect(body.locator(".turn")).to_have_count(4)  # the current conversation: opening, 1, edit, 3
        speakers = body.locator(":scope > .turn").evaluate_all("els => els.map(e => e.dataset.speaker)")
        assert speakers == ["researcher", "A", "B", "A"]
        order = body.locator(":scope > *").evaluate_all("els => els.map(e => e.className)")
        assert order.index("prediction") == order.index("turn", order.index("turn") + 1) - 1  # just before turn 1
        expect(body.locator(".prediction")).to_contain_text("prediction of A's turn 1 by B (partner)")
        expect(body.locator(".prediction .scores")).to_contain_text("chrf 0.410 (shuffled 0.200)")
        expect(body.locator(".side.coordination")).to_contain_text("answer as read: 7")
        expect(body.locator(".side.report")).to_contain_text("report back from A")
        expect(body.locator(".turn.edited")).to_contain_text("researcher edit: temperature 1.3")
        expect(body.locator(".fork-label")).to_have_text(
            "fork after turn 1: 2 branches (the current conversation continues below)"
        )
        branch = body.locator("details.branch")
        expect(branch.locator(".branch-body > *")).to_have_count(0)
        branch.locator("summary").click()
        expect(branch.locator(".branch-body .turn")).to_have_text([re.compile("The original turn 2")])
        # The model's "<script>" is text: no element came of it, and it reads as written.
        assert page.evaluate("document.querySelectorAll('.transcript-body script, .transcript-body img').length") == 0
        expect(body.locator(".turn").nth(1)).to_contain_text('</script><script>alert("pwned")</script>')
        expect(page.locator("details.transcript").nth(1).locator(".transcript-body > *")).to_have_count(0)
    assert records.problems() == [], "\n".join(records.problems())


# -- the HTML report beside the Markdown report --------------------------------------------------


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table of a Markdown text as rows of cells, the inline marks and escapes removed."""
    tables: list[list[list[str]]] = []
    previous = False
    for line in text.splitlines():
        is_row = line.startswith("|") and line.rstrip().endswith("|")
        if is_row and not re.fullmatch(r"\|(-+\|)+", line.strip()):
            cells = [unmark(c.replace("\\|", "|")) for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if not previous:
                tables.append([])
            tables[-1].append(cells)
        previous = is_row
    return tables


def unmark(text: str) -> str:
    text = re.sub(r"`([^`]+)`", r"\1", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])", r"\1", text)
    return " ".join(text.split())


def report(db: Path, fmt: str, out: Path) -> str:
    result = cli("report", EXPERIMENT, "--format", fmt, "--out", out, "--db", db)
    assert result.exit_code == 0, result.output
    (written,) = out.glob("*.html" if fmt == "html" else "*.md")
    return written.read_text(encoding="utf-8")


def test_the_html_report_says_what_the_markdown_report_says(db_copy: Path, tmp_path: Path) -> None:
    markdown = report(db_copy, "markdown", tmp_path / "md")
    page = report(db_copy, "html", tmp_path / "html")
    markup = Markup(page)
    assert markup.unbalanced == []
    sections = [unmark(line[3:]) for line in markdown.splitlines() if line.startswith("## ")]
    assert sections and [title for _, title in markup.sections] == sections
    subsections = [unmark(line[4:]) for line in markdown.splitlines() if line.startswith("### ")]
    assert [text for tag, text in markup.headings if tag == "h3"] == subsections
    md_tables = markdown_tables(markdown)
    assert len(md_tables) >= 5 and markup.tables == md_tables
    assert "Reproducibility" in sections and "Transcripts" in sections
    assert page.count('<details class="transcript"') == DIALOGUES
    assert SECRET_REASONING not in page and SECRET_REASONING not in markdown
    for forbidden in ("http://", "https://", "xmlns", str(db_copy.parent)):
        assert forbidden not in page, forbidden
    print(f"\nthe HTML report of {DIALOGUES} dialogues x {TURNS} turns: {len(page.encode()) / 1e3:.0f} kB")
