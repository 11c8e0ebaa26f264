"""The report as one self-contained HTML page: it reads like a paper's results section, opens in
any browser from a file or an e-mail, and asks nothing of the network.

Why it is built the way it is:

- **Nothing external.** Styles and the script are inline, plots are inline SVG, and no
  attribute points anywhere but at an ``#anchor`` of the page: a report shared with a colleague
  must look the same offline and must not reveal who opened it. Even the XML namespace strings
  matplotlib writes are stripped (HTML5 puts an inline ``<svg>`` in the SVG namespace itself),
  and in text ``//`` is written ``&#47;&#47;`` and ``src=``/``href=`` ``src&#61;`` (in the
  embedded JSON ``\\/`` and ``src\\u003d``), so a model that wrote an address or a tag in a
  transcript puts no URL and no reference into the file either: a check of the file finds
  none, whatever the models wrote.
- **Escaped, then marked up.** Every text goes through :func:`html.escape` before the three
  inline marks of :mod:`clonechat.analysis.document` (```code```, ``**strong**``,
  ``*emphasis*``) become tags; model text (transcripts, reports back) gets no marks at all.
- **Usable at 1,000 dialogues.** Transcripts are embedded once as JSON
  (``<script type="application/json">``, every ``<`` written ``\\u003c`` so no ``</script>``
  can end it) and only a ``<details>`` line per dialogue is in the markup. The inline script
  builds a transcript when its ``<details>`` is first opened (one capturing ``toggle`` listener
  for the page), with DOM calls and ``textContent`` only: model text can never become markup.

The DOM contract (tests and a headless-browser test rely on it): top-level sections are
``<section id="{anchor}">`` with an ``<h2>``, their subsections ``div.subsection[id]`` with an
``<h3>``/``<h4>``; ``nav.toc`` links to both; each dialogue is
``details.transcript[data-dialogue=ID]`` whose ``.transcript-body`` is empty until opened, then
holds ``div.turn[data-speaker=A|B|researcher]``, ``div.prediction`` (before the turn it
predicted), ``div.side`` (coordination answers, reports back, errors), ``div.fork`` with
``details.branch`` for branches off the current conversation.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from clonechat.analysis.document import (
    Block,
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

#: The id of the first embedded transcripts' data (later blocks: ``-2``, ``-3``, ...).
DATA_ID = "transcripts-data"
#: Characters of a dialogue id its summary line shows (as ``clonechat ls`` and the report do).
ID_PREFIX = 8

_CODE_SPAN = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: An attribute that loads or links something, written in text (a model's "<img src=...>").
_REFERENCE = re.compile(r"(?i)(src|href|action|srcset|poster)=")
#: A cell that is a figure: a number first ("0.412 [0.30, 0.52]", "10 (10)", "-3", "12%",
#: "1e-05"), not a hash or a date that starts with a digit ("6bad7e19", "2025-01-02").
_NUMERIC = re.compile(r"^\s*[(\[]?\s*[-+−–]?(\d[\d,]*(\.\d+)?|\.\d+)([eE][-+]?\d+)?(?=$|[\s%)\](\[,;])")
#: Cells that say "no figure" without making a column text.
_NEUTRAL = frozenset({"", "-", "–", "—", "n/a", "na", "none"})


def escape(text: str) -> str:
    """``text`` safe anywhere in the page's markup (and in attribute values), with no URL and
    no ``src=``/``href=`` left whole in it (see the module docstring)."""
    escaped = html.escape(_LONE_SURROGATE.sub("\ufffd", text)).replace("//", "&#47;&#47;")
    return _REFERENCE.sub(r"\1&#61;", escaped)


def inline(text: str) -> str:
    """The document's inline subset as HTML: escaped first, then ```code``` (taken literally),
    ``**strong**`` and ``*emphasis*`` (which may hold code: ``**`id`**``)."""
    spans: list[str] = []

    def hold(span: re.Match[str]) -> str:
        spans.append(f"<code>{escape(span.group(1))}</code>")
        return f"\x00{len(spans) - 1}\x00"

    held = _CODE_SPAN.sub(hold, text.replace("\x00", ""))
    marked = _EMPHASIS.sub(r"<em>\1</em>", _STRONG.sub(r"<strong>\1</strong>", escape(held)))
    return re.sub("\x00(\\d+)\x00", lambda m: spans[int(m.group(1))], marked)


def _plain(text: str) -> str:
    """``text`` without the inline marks, as a reader sees it (a ``<title>``, an ``aria-label``)."""
    return _EMPHASIS.sub(r"\1", _STRONG.sub(r"\1", _CODE_SPAN.sub(r"\1", text)))


# -- blocks ------------------------------------------------------------------------------------


def _numeric_columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[bool]:
    """Per column: are its cells figures (right-aligned, as a paper sets them)? A column is when
    every cell that holds something is a number first, and at least one does."""
    flags = []
    for index in range(len(headers)):
        cells = [_plain(row[index]).strip() for row in rows if index < len(row)]
        filled = [c for c in cells if c.lower() not in _NEUTRAL]
        flags.append(bool(filled) and all(_NUMERIC.match(c) for c in filled))
    return flags


def table_html(table: Table) -> str:
    headers, rows = list(table.headers), [list(r) for r in table.rows]
    width = max([len(headers), *(len(r) for r in rows)])
    headers += [""] * (width - len(headers))
    numeric = _numeric_columns(headers, rows)

    def cell(tag: str, text: str, index: int) -> str:
        attrs = ' class="num"' if numeric[index] else ""
        scope = ' scope="col"' if tag == "th" else ""
        return f"<{tag}{attrs}{scope}>{inline(text)}</{tag}>"

    head = "<tr>" + "".join(cell("th", h, i) for i, h in enumerate(headers)) + "</tr>"
    body = "\n".join(
        "<tr>" + "".join(cell("td", c, i) for i, c in enumerate(row + [""] * (width - len(row)))) + "</tr>"
        for row in rows
    )
    return f'<div class="table-wrap"><table>\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>\n</table></div>'


def bullets_html(bullets: Bullets) -> str:
    lead = f'<p class="lead">{inline(bullets.title)}</p>\n' if bullets.title else ""
    items = "\n".join(f"<li>{inline(item)}</li>" for item in bullets.items)
    return f"{lead}<ul>\n{items}\n</ul>"


def quote_html(quote: Quote) -> str:
    """A report back: its heading line (marks allowed: the report wrote it), then the model's
    text as it is, paragraph by paragraph (no marks: the model wrote it)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", quote.text.strip()) if p.strip()]
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    return f'<blockquote><p class="quote-heading">{inline(quote.heading)}</p>{body}</blockquote>'


def code_html(code: Code) -> str:
    language = f' class="language-{escape(code.language)}"' if code.language else ""
    return f"<pre><code{language}>{escape(code.text.rstrip())}</code></pre>"


def clean_svg(svg: str, prefix: str, label: str) -> str:
    """matplotlib's SVG document as markup to inline in HTML: no XML prolog, DOCTYPE, metadata,
    comments or namespace declarations (each one a URL string), ``xlink:href`` as ``href``,
    every id prefixed with ``prefix`` (each figure names its groups ``figure_1``, ``axes_1``...:
    two figures on one page would share ids), its page-wide ``*`` style scoped to the figure."""
    svg = re.sub(r"<\?xml[^>]*\?>", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>", "", svg)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL)
    svg = re.sub(r'\s+xmlns(:[\w-]+)?="[^"]*"', "", svg)
    svg = svg.replace("xlink:href=", "href=")
    svg = re.sub(r'(\sid=")([^"]+)"', rf'\g<1>{prefix}\g<2>"', svg)
    svg = re.sub(r'(\shref="#)([^"]+)"', rf'\g<1>{prefix}\g<2>"', svg)
    svg = re.sub(r"(url\(#)([^)]+)\)", rf"\g<1>{prefix}\g<2>)", svg)
    svg = svg.replace('<style type="text/css">*{', f'<style type="text/css">#{prefix}svg *{{')
    svg = re.sub(r"\n[ \t]+", "\n", svg).strip()
    return re.sub(
        r"<svg\b", f'<svg id="{prefix}svg" class="plot" role="img" aria-label="{escape(label)}"', svg, count=1
    )


def plot_svg(plot: Plot, prefix: str) -> str:
    """The plot drawn and saved as SVG text (text kept as text, not paths: smaller, and ids
    hashed with a fixed salt so the same data gives the same bytes)."""
    import matplotlib

    figure = plot.draw()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "clonechat"}):
        figure.savefig(buffer, format="svg")
    return clean_svg(buffer.getvalue(), prefix, _plain(plot.alt))


# -- transcripts -------------------------------------------------------------------------------


def _field(dialogue: Mapping[str, object], key: str, default: object = "") -> str:
    value = dialogue.get(key, default)
    return str(default if value is None else value)


def _forked(dialogue: Mapping[str, object]) -> bool:
    """Whether the dialogue's tree branches anywhere (a conversation node with two children)."""
    nodes = dialogue.get("nodes")
    seen: set[object] = set()
    for node in nodes if isinstance(nodes, list) else []:
        if isinstance(node, Mapping) and node.get("k") in ("opening", "turn"):
            parent = node.get("p")
            if parent in seen:
                return True
            seen.add(parent)
    return False


def transcript_summary(dialogue: Mapping[str, object]) -> str:
    """One dialogue's line: condition · replicate · id prefix · status · turns (· forked)."""
    turns = _field(dialogue, "turns", 0)
    parts = [
        _field(dialogue, "cond"),
        f"replicate {_field(dialogue, 'rep')}",
        _field(dialogue, "id")[:ID_PREFIX],
        _field(dialogue, "status"),
        f"{turns} turn{'' if turns == '1' else 's'}",
    ]
    return " · ".join(parts + (["forked"] if _forked(dialogue) else []))


def transcripts_data(dialogues: Sequence[Mapping[str, object]]) -> str:
    """The dialogues as JSON safe inside ``<script>``: ``<`` is ``\\u003c`` (no ``</script>``,
    no ``<!--``), ``/`` is ``\\/`` (no URL whole in the file), lone surrogates escaped."""
    text = json.dumps(list(dialogues), ensure_ascii=False, separators=(",", ":"))
    text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)
    text = _REFERENCE.sub(r"\1\\u003d", text)
    return text.replace("<", "\\u003c").replace("/", "\\/")


def _dialogue_records(block: Transcripts) -> list[Mapping[str, object]]:
    records = []
    for dialogue in block.dialogues:
        if not isinstance(dialogue, Mapping):
            raise TypeError(
                f"Transcripts.dialogues holds {type(dialogue).__name__}, not the records of "
                "clonechat.analysis.transcripts.load_transcripts"
            )
        records.append(dialogue)
    return records


TRANSCRIPTS_NOTE = (
    "Open a dialogue to read it. Each prediction is shown before the turn it predicted, with its "
    "scores and, in brackets, its shuffled control's; coordination answers and reports back are "
    "marked as side channels, which neither agent saw. Where the tree forks, the branches off the "
    "current conversation are collapsed under the fork."
)


# -- the page ----------------------------------------------------------------------------------


@dataclass
class _Page:
    """What rendering collects on the way: the ids used, the embedded data, the contents."""

    ids: set[str] = field(default_factory=set)
    data: list[tuple[str, str]] = field(default_factory=list)
    contents: list[tuple[int, str, str]] = field(default_factory=list)
    figures: int = 0

    def unique(self, wanted: str) -> str:
        """``wanted`` as an id no other element of the page has (the data's ids are reserved)."""
        if wanted.startswith(DATA_ID):
            wanted = f"section-{wanted}"
        candidate, n = wanted, 1
        while candidate in self.ids:
            n += 1
            candidate = f"{wanted}-{n}"
        self.ids.add(candidate)
        return candidate

    def block(self, block: Block, parent: str) -> str:
        if isinstance(block, Section):
            return self.section(block, parent)
        if isinstance(block, Paragraph):
            return f"<p>{inline(block.text)}</p>"
        if isinstance(block, Table):
            return table_html(block)
        if isinstance(block, Bullets):
            return bullets_html(block)
        if isinstance(block, Quote):
            return quote_html(block)
        if isinstance(block, Code):
            return code_html(block)
        if isinstance(block, Plot):
            self.figures += 1
            svg = plot_svg(block, f"fig{self.figures}-")
            return f"<figure>\n{svg}\n<figcaption>{inline(block.alt)}</figcaption>\n</figure>"
        return self.transcripts(block)

    def section(self, section: Section, parent: str = "") -> str:
        level = min(max(section.level, 2), 6)
        anchor = self.unique(f"{parent}-{section.anchor}" if parent else section.anchor)
        if level <= 3:
            self.contents.append((level, anchor, section.title))
        blocks = "\n".join(self.block(b, anchor) for b in section.blocks)
        # A subsection is a <div>: every <section> of the page is a top-level one with its <h2>.
        tag = "div" if parent else "section"
        attrs = f' id="{anchor}"' + (' class="subsection"' if parent else "")
        return f"<{tag}{attrs}>\n<h{level}>{inline(section.title)}</h{level}>\n{blocks}\n</{tag}>"

    def transcripts(self, block: Transcripts) -> str:
        records = _dialogue_records(block)
        source = DATA_ID if not self.data else f"{DATA_ID}-{len(self.data) + 1}"
        self.data.append((source, transcripts_data(records)))
        count = len(records)
        lines = [
            f'<div class="transcripts" data-source="{source}">',
            f'<p class="transcripts-note">{count:,} dialogue{"" if count == 1 else "s"}. {TRANSCRIPTS_NOTE}</p>',
        ]
        lines += [
            f'<details class="transcript" data-dialogue="{escape(_field(d, "id"))}">'
            f'<summary>{escape(transcript_summary(d))}</summary><div class="transcript-body"></div></details>'
            for d in records
        ]
        return "\n".join([*lines, "</div>"])

    def toc(self) -> str:
        items: list[str] = []
        open_sub = False
        for level, anchor, title in self.contents:
            link = f'<a href="#{anchor}">{inline(title)}</a>'
            if level == 2:
                if open_sub:
                    items.append("</ol></li>")
                    open_sub = False
                elif items:
                    items.append("</li>")
                items.append(f"<li>{link}")
            else:
                if not open_sub:
                    items.append("<ol>")
                    open_sub = True
                items.append(f"<li>{link}</li>")
        if items:
            items.append("</ol></li>" if open_sub else "</li>")
        return (
            '<nav class="toc" aria-label="Contents">\n<h2>Contents</h2>\n<ol>\n' + "\n".join(items) + "\n</ol>\n</nav>"
        )


def render_html(doc: Document) -> str:
    """``doc`` as one complete, self-contained HTML page (see the module docstring)."""
    page = _Page()
    sections = "\n".join(page.section(s) for s in doc.sections)
    facts = "\n".join(f"<li>{inline(f)}</li>" for f in doc.facts)
    header = f"<header>\n<h1>{inline(doc.title)}</h1>\n" + (f'<ul class="facts">\n{facts}\n</ul>\n' if facts else "")
    data = "\n".join(f'<script type="application/json" id="{source}">{text}</script>' for source, text in page.data)
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(_plain(doc.title))}</title>",
            f"<style>{STYLE}</style>",
            "</head>",
            "<body>",
            "<main>",
            header + "</header>",
            page.toc() if page.contents else "",
            sections,
            "</main>",
            data,
            f"<script>{SCRIPT}</script>" if page.data else "",
            "</body>",
            "</html>",
            "",
        ]
    )


STYLE = """
:root { color-scheme: light; --ink: #1b1b1b; --muted: #5c5c5c; --rule: #d4d4d4; --tint: #f6f6f3;
        --a: #1f5fa8; --b: #a8501f; --researcher: #6b6b6b; }
* { box-sizing: border-box; }
html { font-size: 100%; }
body { margin: 0; color: var(--ink); background: #fff;
       font-family: Charter, "Bitstream Charter", "Sitka Text", Cambria, Georgia, "Times New Roman", serif;
       line-height: 1.55; }
main { max-width: 60rem; margin: 0 auto; padding: 2rem 1.5rem 4rem; }
h1 { font-size: 1.9rem; line-height: 1.2; margin: 0 0 .75rem; }
h2 { font-size: 1.4rem; margin: 2.5rem 0 .75rem; padding-bottom: .2rem; border-bottom: 1px solid var(--rule); }
h3 { font-size: 1.15rem; margin: 1.75rem 0 .5rem; }
h4, h5, h6 { font-size: 1rem; margin: 1.25rem 0 .4rem; }
p, ul, ol { margin: .5rem 0 .9rem; }
code, pre, .transcript summary, .meta { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
code { font-size: .88em; background: var(--tint); padding: 0 .2em; border-radius: 2px; }
pre { background: var(--tint); padding: .75rem 1rem; overflow-x: auto; font-size: .85rem; line-height: 1.4;
      border: 1px solid var(--rule); }
pre code { background: none; padding: 0; font-size: inherit; }
a { color: var(--a); }
.facts { list-style: none; padding: 0; color: var(--muted); }
.toc { border: 1px solid var(--rule); padding: .5rem 1.25rem; margin: 1.5rem 0 2rem; }
.toc h2 { border: 0; margin: .5rem 0; font-size: 1.05rem; }
.toc ol { margin: .25rem 0; padding-left: 1.4rem; }
.table-wrap { overflow-x: auto; margin: .75rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; line-height: 1.35; }
th, td { padding: .3rem .6rem; text-align: left; vertical-align: top; border-bottom: 1px solid var(--rule); }
thead th { border-top: 2px solid var(--ink); border-bottom: 1px solid var(--ink); }
tbody tr:last-child td { border-bottom: 2px solid var(--ink); }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.lead { font-weight: bold; margin-bottom: .25rem; }
blockquote { margin: .75rem 0 1rem; padding: .25rem 1rem; border-left: 3px solid var(--rule); color: #333; }
blockquote p { white-space: pre-line; }
.quote-heading { color: var(--muted); }
figure { margin: 1.25rem 0; }
figure svg { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .4rem; }
.transcripts-note { color: var(--muted); }
details.transcript { border-top: 1px solid var(--rule); }
details.transcript:last-child { border-bottom: 1px solid var(--rule); }
.transcript summary { cursor: pointer; padding: .3rem 0; font-size: .85rem; }
.transcript-body { padding: .25rem 0 1rem; }
.turn, .prediction, .side { margin: .5rem 0; padding: .35rem .75rem; border-left: 3px solid var(--researcher); }
.turn[data-speaker="A"] { border-left-color: var(--a); }
.turn[data-speaker="B"] { border-left-color: var(--b); }
.turn.edited { background: #fff8e1; }
.prediction, .side { margin-left: 1.5rem; font-size: .9rem; background: var(--tint); border-left-style: dashed; }
.side.error { border-left-color: #b00020; }
.meta { font-size: .78rem; color: var(--muted); }
.meta .speaker { font-weight: bold; color: var(--ink); }
.meta .badge { border: 1px solid currentColor; border-radius: 3px; padding: 0 .3em; margin-left: .4em; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
.scores { list-style: none; padding: 0; margin: .25rem 0 0; font-size: .8rem; color: var(--muted);
          display: flex; flex-wrap: wrap; gap: .15rem 1rem; }
.fork { margin: .5rem 0 .5rem 1.5rem; }
.fork-label { font-size: .8rem; color: var(--muted); font-weight: bold; }
details.branch > summary { cursor: pointer; font-size: .85rem; color: var(--muted); }
.branch-body { margin-left: .5rem; padding-left: .75rem; border-left: 2px dotted var(--rule); }
@media print {
  main { max-width: none; padding: 0; }
  a { color: inherit; text-decoration: none; }
  h2, h3 { break-after: avoid; }
  figure, blockquote, tr, .turn, .prediction { break-inside: avoid; }
  .table-wrap { overflow: visible; }
}
"""

#: The page's only script: builds a transcript (and a branch) from the embedded JSON the first
#: time its <details> opens. DOM calls and textContent only, so no model text becomes markup.
SCRIPT = """
(function () {
  "use strict";
  var sources = {};
  var fillers = new WeakMap();

  function records(source) {
    if (!sources[source]) {
      var holder = document.getElementById(source);
      var list = holder ? JSON.parse(holder.textContent) : [];
      var byId = {};
      for (var i = 0; i < list.length; i++) byId[list[i].id] = list[i];
      sources[source] = byId;
    }
    return sources[source];
  }

  function modelOf(tree, node) {
    if (node.m) return node.m;
    return node.s === "A" ? tree.dialogue.ma : node.s === "B" ? tree.dialogue.mb : null;
  }

  function make(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function isConversation(node) { return node.k === "opening" || node.k === "turn"; }

  function push(map, key, value) { (map[key] = map[key] || []).push(value); }

  function Tree(dialogue) {
    this.dialogue = dialogue;
    this.byId = {};
    this.kids = {};
    this.before = {};
    this.after = {};
    var nodes = dialogue.nodes || [];
    for (var i = 0; i < nodes.length; i++) this.byId[nodes[i].id] = nodes[i];
    for (var j = 0; j < nodes.length; j++) {
      var node = nodes[j];
      if (isConversation(node)) push(this.kids, node.p || "", node.id);
      else if (node.k === "prediction" && node.tg && this.byId[node.tg]) push(this.before, node.tg, node);
      else push(this.after, node.p || "", node);
    }
  }

  Tree.prototype.descend = function (start) {
    var line = [start];
    var current = start;
    var guard = (this.dialogue.nodes || []).length;
    while (this.kids[current] && this.kids[current].length && guard-- > 0) {
      var kids = this.kids[current];
      current = kids[kids.length - 1];
      line.push(current);
    }
    return line;
  };

  function score(value) { return value === null || value === undefined ? "n/a" : Number(value).toFixed(3); }

  function meta(parts) {
    var line = make("div", "meta");
    for (var i = 0; i < parts.length; i++) {
      if (!parts[i]) continue;
      if (line.childNodes.length) line.appendChild(document.createTextNode(" \\u00b7 "));
      line.appendChild(typeof parts[i] === "string" ? make("span", null, parts[i]) : parts[i]);
    }
    return line;
  }

  function editNote(edit) {
    var keys = Object.keys(edit || {});
    var said = [];
    for (var i = 0; i < keys.length; i++) {
      var key = keys[i];
      if (key.indexOf("system_prompt") === 0) said.push("system prompt " + key.slice(-1).toUpperCase() + " changed");
      else said.push(key + " " + String(edit[key]));
    }
    return "researcher edit" + (said.length ? ": " + said.join(", ") : "");
  }

  function message(tree, node) {
    var box = make("div", "turn");
    box.setAttribute("data-speaker", node.s);
    var edited = node.m === "researcher-edit";
    if (edited) box.classList.add("edited");
    var whom = node.s === "researcher" && node.v ? " \\u2192 " + node.v + " only" : "";
    var who = make("span", "speaker", (node.k === "opening" ? "researcher" : node.s) + whom);
    var badge = edited ? make("span", "badge", editNote(node.e)) : null;
    var index = node.k === "opening" ? "opening" : "turn " + node.t;
    box.appendChild(meta([who, index, edited ? null : modelOf(tree, node), badge]));
    box.appendChild(make("div", "text", node.c));
    return box;
  }

  function predictor(tree, node) {
    var target = tree.byId[node.tg];
    var whose = target ? target.s + "'s turn " + target.t : "a turn";
    var variant = node.v || "partner";
    var by = node.s + " (partner)";
    if (variant === "self") by = node.s + " itself (self)";
    else if (variant === "cross") by = "a cross model (cross)";
    return "prediction of " + whose + " by " + by;
  }

  function prediction(tree, node) {
    var box = make("div", "prediction");
    box.setAttribute("data-variant", node.v || "partner");
    box.appendChild(meta([make("span", "speaker", predictor(tree, node)), modelOf(tree, node)]));
    box.appendChild(make("div", "text", node.c));
    var scores = node.sc || {};
    var names = Object.keys(scores).sort();
    if (names.length) {
      var list = make("ul", "scores");
      for (var i = 0; i < names.length; i++) {
        var pair = scores[names[i]];
        list.appendChild(make("li", null, names[i] + " " + score(pair[0]) + " (shuffled " + score(pair[1]) + ")"));
      }
      box.appendChild(list);
    } else {
      box.appendChild(make("div", "meta", "not scored"));
    }
    return box;
  }

  function recognised(tree, node) {
    var shown = tree.byId[node.tg];
    var whose = shown ? (shown.s === node.s ? "its own" : "its partner's") + " turn " + shown.t : "a turn";
    var value = (node.sc || {}).recognition;
    var verdict = !value ? "not scored" : value[0] === 1 ? "correct" : value[0] === 0 ? "wrong" : "unreadable";
    var asked = node.s + " asked about " + whose + " (unlabelled)";
    return "side channel \\u00b7 recognition \\u00b7 " + asked + " \\u00b7 " + verdict;
  }

  function side(tree, node) {
    var kind = node.k === "report" || node.k === "error" || node.k === "recognition" ? node.k : "coordination";
    var box = make("div", "side " + kind);
    var label;
    if (kind === "report") label = "side channel \\u00b7 report back from " + node.s;
    else if (kind === "recognition") label = recognised(tree, node);
    else if (kind === "error") label = "error";
    else label = "side channel \\u00b7 coordination " + (node.v || "") + " \\u00b7 " + node.s;
    box.appendChild(meta([make("span", "speaker", label), modelOf(tree, node)]));
    box.appendChild(make("div", "text", kind === "error" ? (node.err || node.c) : node.c));
    if (node.a !== undefined) {
      box.appendChild(make("div", "meta", "answer as read: " + (node.a === "" ? "(none)" : node.a)));
    }
    return box;
  }

  function branch(tree, start, index, count) {
    var line = tree.descend(start);
    var first = tree.byId[start];
    var last = tree.byId[line[line.length - 1]];
    var details = make("details", "branch");
    var span = first.t === last.t ? "turn " + first.t : "turns " + first.t + "\\u2013" + last.t;
    var words = ["branch " + index + " of " + count, span];
    if (first.m === "researcher-edit") words.push("starts with a researcher edit");
    details.appendChild(make("summary", null, words.join(" \\u00b7 ")));
    var body = make("div", "branch-body");
    details.appendChild(body);
    fillers.set(details, function () { render(tree, body, line, false); });
    return details;
  }

  function fork(tree, parent, kids, next, current) {
    var box = make("div", "fork");
    var where = parent ? "after turn " + tree.byId[parent].t : "at the opening";
    var label = "fork " + where + ": " + kids.length + " branches";
    if (kids.length === 1) label = "continued on another branch " + where;
    if (next) label += " (" + (current ? "the current conversation" : "this branch") + " continues below)";
    box.appendChild(make("div", "fork-label", label));
    for (var i = 0; i < kids.length; i++) {
      if (kids[i] !== next) box.appendChild(branch(tree, kids[i], i + 1, kids.length));
    }
    return box;
  }

  function render(tree, container, line, current) {
    for (var i = 0; i < line.length; i++) {
      var id = line[i];
      var node = tree.byId[id];
      var j;
      var before = tree.before[id] || [];
      for (j = 0; j < before.length; j++) container.appendChild(prediction(tree, before[j]));
      container.appendChild(message(tree, node));
      var after = tree.after[id] || [];
      for (j = 0; j < after.length; j++) container.appendChild(side(tree, after[j]));
      var kids = tree.kids[id] || [];
      var next = line[i + 1];
      if (kids.length > 1 || (kids.length === 1 && kids[0] !== next)) {
        container.appendChild(fork(tree, id, kids, next, current));
      }
    }
  }

  function fill(details) {
    var body = details.querySelector(".transcript-body");
    var holder = details.closest(".transcripts");
    if (!body || !holder || body.getAttribute("data-filled")) return;
    body.setAttribute("data-filled", "1");
    var dialogue = records(holder.getAttribute("data-source"))[details.getAttribute("data-dialogue")];
    if (!dialogue) { body.appendChild(make("p", "meta", "This dialogue's data is missing from the page.")); return; }
    var tree = new Tree(dialogue);
    var facts = ["A: " + dialogue.ma, "B: " + dialogue.mb, "first speaker " + dialogue.first, "seed " + dialogue.seed];
    if (dialogue.stop) facts.push("stopped: " + dialogue.stop);
    body.appendChild(make("div", "meta", facts.join(" \\u00b7 ")));
    var early = tree.after[""] || [];
    for (var i = 0; i < early.length; i++) body.appendChild(side(tree, early[i]));
    var path = [];
    var given = dialogue.path || [];
    for (var j = 0; j < given.length; j++) {
      if (tree.byId[given[j]] && isConversation(tree.byId[given[j]])) path.push(given[j]);
    }
    var roots = tree.kids[""] || [];
    if (!path.length && roots.length) path = tree.descend(roots[roots.length - 1]);
    if (!path.length) { body.appendChild(make("p", "meta", "Nothing of this dialogue is stored yet.")); return; }
    if (roots.length > 1) body.appendChild(fork(tree, "", roots, path[0], true));
    render(tree, body, path, true);
  }

  document.addEventListener("toggle", function (event) {
    var target = event.target;
    if (!(target instanceof HTMLDetailsElement) || !target.open) return;
    if (target.classList.contains("transcript")) fill(target);
    var later = fillers.get(target);
    if (later) { fillers.delete(target); later(); }
  }, true);
})();
"""
