"""``clonechat share`` and ``clonechat import``: an experiment to another researcher and back.

The pilot is made once for the module by a real ``clonechat batch`` on the scripted model
(predictions with self-prediction, coordination answers, reports back, two conditions and a
control, their scores) plus a researcher's fork with an edited system prompt, continued live.
Its archive is imported into empty databases (SQLite files and one PostgreSQL database) and
every row of the experiment is compared table by table (``experiment_tables``: every column the
export has, prompt templates included; ``score.id`` aside, each database's own surrogate), and
the imported experiment's ``clonechat report`` against the original's, byte for byte.

A second experiment plants secrets where they can reach the data (an API key in a prompt
variable, a ``.env`` value in a fork, a password and a token in a server's base URL that lands
in the error text of a failed call, the working, home and database directories in a spec, a
prompt and an edit) and the archive is searched, member by member and as HTML and JSON spell
them, for every one of them.
"""

from __future__ import annotations

import hashlib
import html
import json
import socket
import sqlite3
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner, Result

from clonechat.branching import fork_with_edit
from clonechat.cli import app
from clonechat.location import DbLocation, db_location
from clonechat.read.connect import open_existing
from clonechat.read.export_rows import TABLES, experiment_tables
from clonechat.share.manifest import parse_manifest
from clonechat.store.database import Database
from clonechat.tui import data as tui_data
from clonechat.tui.live import LiveDialogue, UiEvent
from clonechat.tui.scores_data import load_scores
from tests.helpers import PILOT, PILOT_SPEC

EDITED_PROMPT = "You are agent A, edited by the researcher for this branch."
MEMBERS = ["manifest.json", "DATASHEET.md", "report.html", "spec.toml", f"data/{PILOT}.jsonl"]


def cli(*args: str | Path | DbLocation) -> Result:
    return CliRunner().invoke(app, [*map(str, args)])


def ok(*args: str | Path | DbLocation) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.output


def one_error_line(result: Result) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def tables(db: DbLocation, name: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the experiment, table by table, as the export reads them (``score.id``
    left out: each database numbers its score rows itself)."""
    with open_existing(db) as reader:
        found = experiment_tables(reader, name)
    out = {}
    for table, (columns, rows) in found.items():
        if table == "score":
            at = columns.index("id")
            rows = [row[:at] + row[at + 1 :] for row in rows]
        out[table] = rows
    return out


def dump(db: Path) -> list[str]:
    """Everything an SQLite file holds, as SQL (what "nothing written" compares)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return list(conn.iterdump())


def report_files(db: DbLocation, name: str, out: Path) -> dict[str, bytes]:
    ok("report", name, "--db", db, "--out", out)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def members(archive: Path) -> dict[str, str]:
    with zipfile.ZipFile(archive) as z:
        return {name: z.read(name).decode("utf-8") for name in z.namelist()}


async def _ignore(_event: UiEvent) -> None:
    pass


async def fork_and_continue(db_path: Path, content: str, system_prompt: str) -> None:
    """A researcher's edit of turn 2 of the first dialogue, with an edited system prompt for A,
    continued live to the end (the scripted model)."""
    with closing(sqlite3.connect(db_path)) as conn:
        dialogue, turn = conn.execute(
            "SELECT dialogue_id, id FROM node WHERE kind = 'turn' AND turn_index = 2 ORDER BY id LIMIT 1"
        ).fetchone()
    with Database.open(db_path) as db:
        edit = await fork_with_edit(db, turn, content, system_prompts={"A": system_prompt})
        await LiveDialogue(db, _ignore).resume(dialogue, edit.id)


@pytest.fixture(scope="module")
def pilot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pilot")
    db = folder / "pilot.db"
    (folder / "pilot.toml").write_text(PILOT_SPEC)
    ok("batch", folder / "pilot.toml", "--db", db)
    anyio.run(fork_and_continue, db, "An edit.", EDITED_PROMPT)
    return db


@pytest.fixture(scope="module")
def archive(pilot: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shared")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)  # no .env or models.toml of the checkout's
        out = ok("share", PILOT, "--db", pilot)
    path = folder / "runs" / "shares" / f"{PILOT}.zip"
    assert out.splitlines()[0] == f"shared {PILOT}: runs/shares/{PILOT}.zip ({path.stat().st_size / 1000:.1f} kB)"
    return path


# --- the archive ---------------------------------------------------------------------------------


def test_the_archive_holds_its_members_in_order_with_their_checksums(archive: Path, pilot: Path) -> None:
    with zipfile.ZipFile(archive) as z:
        assert z.namelist() == MEMBERS
        assert {info.date_time for info in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        manifest = parse_manifest(z.read("manifest.json"), str(archive))
        for name in MEMBERS[1:]:
            content = z.read(name)
            assert manifest.members[name].size == len(content)
            assert manifest.members[name].sha256 == hashlib.sha256(content).hexdigest()
    with open_existing(pilot) as reader:
        (experiment_id,) = [r[0] for r in experiment_tables(reader, PILOT)["experiment"][1]]
    assert (manifest.experiment, manifest.experiment_id, manifest.data) == (PILOT, experiment_id, MEMBERS[-1])
    texts = members(archive)
    assert texts["spec.toml"] == PILOT_SPEC
    assert texts["report.html"].lstrip().lower().startswith("<!doctype html")
    datasheet = texts["DATASHEET.md"]
    for expected in (
        "| base | no-frame | scripted (clone pair) | scripted | 2 | 4 |",
        "| dialogues | 4 (4 completed) |",
    ):
        assert expected in datasheet
    assert "| researcher edits (forks) | 1 |" in datasheet and "prediction (partner, self)" in datasheet
    assert "`worker`" in datasheet and "`lease_grant`" in datasheet and "`node_fts`" in datasheet


def test_the_jsonl_member_is_the_export(archive: Path, pilot: Path, tmp_path: Path) -> None:
    ok("export", PILOT, "--format", "jsonl", "--out", tmp_path, "--db", pilot)
    assert members(archive)[f"data/{PILOT}.jsonl"] == (tmp_path / f"{PILOT}.jsonl").read_text()


def test_sharing_the_same_data_twice_gives_the_same_bytes(archive: Path, pilot: Path, tmp_path: Path) -> None:
    ok("share", PILOT, "--db", pilot, "--out", tmp_path / "again.zip")
    assert (tmp_path / "again.zip").read_bytes() == archive.read_bytes()


# --- importing it --------------------------------------------------------------------------------


def test_an_import_rebuilds_every_row_and_reproduces_the_report(archive: Path, pilot: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest.db"
    out = ok("import", archive, "--db", dest)
    assert out.startswith(f"imported experiment '{PILOT}' from {archive} into {dest}: 4 dialogues, ")
    original = tables(pilot, PILOT)
    assert set(original) == set(TABLES) and all(original.values())
    assert tables(dest, PILOT) == original
    assert report_files(dest, PILOT, tmp_path / "theirs") == report_files(pilot, PILOT, tmp_path / "ours")
    query = "SELECT condition, speaker, count(*), sum(words) FROM v_turn WHERE experiment = 'pilot' GROUP BY 1, 2"
    assert ok("query", query, "--format", "csv", "--db", dest) == ok("query", query, "--format", "csv", "--db", pilot)
    # The full-text index was brought up to date with the copied nodes.
    search = ("search", "reply", "--experiment", PILOT, "--limit", "100000", "--format", "csv")
    found = sorted(ok(*search, "--db", dest).splitlines())
    assert found == sorted(ok(*search, "--db", pilot).splitlines()) and len(found) > 50
    assert "0 new score rows" in ok("score", PILOT, "--scorer", "chrf", "--db", dest)
    # What the TUI reads: the browser's list (with text search) and the scores screen.
    assert tui_data.browse(dest, experiment=PILOT, text="reply") == tui_data.browse(
        pilot, experiment=PILOT, text="reply"
    )
    assert repr(load_scores(dest, PILOT)) == repr(load_scores(pilot, PILOT))
    before = dump(dest)
    again = ok("import", archive, "--db", dest)
    assert again.strip() == (
        f"nothing to add: {dest} already has experiment '{PILOT}' from {archive} (4 dialogues), every row of it"
    )
    assert dump(dest) == before


def test_a_plain_jsonl_export_imports_too(pilot: Path, tmp_path: Path) -> None:
    ok("export", PILOT, "--format", "jsonl", "--out", tmp_path, "--db", pilot)
    dest = tmp_path / "from-jsonl.db"
    assert "imported experiment 'pilot'" in ok("import", tmp_path / f"{PILOT}.jsonl", "--db", dest)
    assert tables(dest, PILOT) == tables(pilot, PILOT)


def test_a_name_clash_is_refused_and_as_renames(archive: Path, pilot: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mine.db"
    (tmp_path / "pilot.toml").write_text(PILOT_SPEC)
    ok("batch", tmp_path / "pilot.toml", "--db", dest)  # my own run of the same spec: another experiment
    before = dump(dest)
    refused = cli("import", archive, "--db", dest)
    assert one_error_line(refused) == (
        f"error: {dest} already has another experiment named 'pilot': import this one under another name "
        "with --as pilot-2"
    )
    assert refused.exit_code == 2 and dump(dest) == before
    out = ok("import", archive, "--as", "pilot-theirs", "--db", dest)
    assert out.startswith(f"imported experiment 'pilot-theirs' (named 'pilot' in the file) from {archive}")
    theirs, original = tables(dest, "pilot-theirs"), tables(pilot, PILOT)
    assert theirs.pop("experiment") != original.pop("experiment")  # the name only
    # Prompts and templates are stored once by hash: those my run stored first keep their time.
    for table in ("prompt", "prompt_template"):
        assert [row[:-1] for row in theirs.pop(table)] == [row[:-1] for row in original.pop(table)]
    assert theirs == original
    assert "pilot-theirs" in report_files(dest, "pilot-theirs", tmp_path / "report")["report.md"].decode()
    before = dump(dest)
    elsewhere = cli("import", archive, "--as", "pilot-again", "--db", dest)
    assert "under the name 'pilot-theirs': nothing imported" in one_error_line(elsewhere)
    again = cli("import", archive, "--db", dest)
    assert "under the name 'pilot-theirs'" in one_error_line(again)
    assert dump(dest) == before
    # The database it was shared from already holds it, with its spec as written there.
    assert "nothing to add" in ok("import", archive, "--db", pilot)


def test_an_import_into_postgresql(archive: Path, pilot: Path, pg_url: str, tmp_path: Path) -> None:
    dest = db_location(pg_url)
    assert "imported experiment 'pilot'" in ok("import", archive, "--db", pg_url)
    assert tables(dest, PILOT) == tables(pilot, PILOT)
    assert report_files(dest, PILOT, tmp_path / "server") == report_files(pilot, PILOT, tmp_path / "file")
    assert "nothing to add" in ok("import", archive, "--db", pg_url)
    # ... and shared again from the server, it imports into a file with the same rows.
    ok("share", PILOT, "--db", pg_url, "--out", tmp_path / "from-server.zip")
    back = tmp_path / "back.db"
    ok("import", tmp_path / "from-server.zip", "--db", back)
    assert tables(back, PILOT) == tables(pilot, PILOT)


# --- nothing private goes in ---------------------------------------------------------------------

KEY = "sk-plantedKEY-4f1d9a7c2e"
TOKEN = "tok-plantedTOKEN-8b3e"
DOTENV = "dotenv-plantedDOTENV-51c0"
PASSWORD = "pw-plantedPASSWORD-77ad"
QUERY = "q-plantedQUERY-0e42"
USER = "plantedUSER"
PLAIN = "plainPLANTEDvalue-2213"
HOME, WORK, DBDIR = "homePLANTED-c31", "workPLANTED-a07", "dbdirPLANTED-f96"


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def secret_spec(home: Path, work: Path, dbdir: Path, port: int) -> str:
    return f"""\
name = "secrets"
description = "notes in {dbdir}/notes.txt; service token {TOKEN}"
# models_file = "{home}/models.toml"
replicates = 1
max_turns = 2
seed = 5
model_a = "scripted"

[prediction]

[coordination]
tasks = ["number"]

[report_back]

[models.srv]
provider = "openai-compatible"
base_url = "http://{USER}:{PASSWORD}@127.0.0.1:{port}/v1?api_key={QUERY}"
model = "m"
api_key_env = "SHARETEST_API_KEY"
retry_budget = 0.5

[[conditions]]
name = "told"
template = "told-other-ai"
[conditions.variables]
partner_description = "an AI whose key is {KEY}, kept in {dbdir}"

[[conditions]]
name = "server"
template = "clone-aware"
model_a = "srv"
"""


def spellings(text: str) -> list[str]:
    """A member's text, and as HTML and JSON would hide words in it."""
    return [text, html.unescape(text), text.replace("\\/", "/"), html.unescape(text).replace("\\/", "/")]


def test_nothing_private_goes_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, work, dbdir = (tmp_path / HOME), (tmp_path / WORK), (tmp_path / DBDIR / "runs")
    for folder in (home, work, dbdir):
        folder.mkdir(parents=True)
    db = dbdir / "clonechat.db"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    monkeypatch.setenv("SHARETEST_API_KEY", KEY)
    monkeypatch.setenv("SHARETEST_SERVICE_TOKEN", TOKEN)
    monkeypatch.setenv("SHARETEST_PLAIN", PLAIN)
    (work / ".env").write_text(f"SHARETEST_DOTENV_CREDENTIAL={DOTENV}\n")
    (work / "secrets.toml").write_text(secret_spec(home, work, dbdir, free_port()))
    ran = cli("batch", "secrets.toml", "--db", db)
    assert ran.exit_code == 1, ran.output  # the server condition's dialogue failed: its error holds the URL
    with closing(sqlite3.connect(db)) as conn:
        (error,) = conn.execute("SELECT error FROM dialogue WHERE status = 'failed'").fetchone()
    # The failure names the server, never the password or key in its URL: not in the database,
    # not on the terminal (clonechat.errors.ProviderError).
    assert "127.0.0.1" in error and "[redacted]@" in error
    for leak in (PASSWORD, QUERY):
        assert leak not in error and leak not in ran.output
    anyio.run(fork_and_continue, db, f"see {work}/notes.md and {DOTENV}", f"You are A; files in {home}/prompts.")

    out = ok("share", "secrets", "--db", db)
    archive = work / "runs" / "shares" / "secrets.zip"
    assert out.splitlines()[0].startswith("shared secrets: runs/shares/secrets.zip (")
    texts = members(archive)
    assert list(texts) == ["manifest.json", "DATASHEET.md", "report.html", "spec.toml", "data/secrets.jsonl"]
    planted = [KEY, TOKEN, DOTENV, PASSWORD, QUERY, USER, PLAIN, HOME, WORK, DBDIR, str(tmp_path)]
    for name, text in texts.items():
        for form in spellings(text):
            for value in planted:
                assert value not in form, (name, value)
    spec = texts["spec.toml"]
    assert 'base_url = "http://[redacted]@127.0.0.1:' in spec and "/v1?api_key=[redacted]" in spec
    assert 'description = "notes in [path]; service token [redacted]"' in spec
    data = texts["data/secrets.jsonl"]
    assert "see [working-dir]/notes.md and [redacted]" in data  # the fork's text, as the model saw it
    assert "You are A; files in [home]/prompts." in data
    assert "an AI whose key is [redacted], kept in [database-folder]" in data
    counts: dict[str, int] = {}
    for line in texts["DATASHEET.md"].split("## Redactions")[1].splitlines():
        if line.startswith("| ") and not line.startswith("| what"):
            what, count = (cell.strip() for cell in line.strip("|").split("|"))
            counts[what] = int(count)
    for kind in ("secret values", "credentials in URLs", "key= / token= URL parameters", "the database's folder"):
        assert next(n for what, n in counts.items() if what.startswith(kind)) > 0, (kind, counts)
    for kind in ("the working directory", "the home directory"):
        assert counts[kind] > 0, (kind, counts)
    assert "redacted:" in out.splitlines()[1]

    # What was shared still imports and reports on the other side.
    dest = tmp_path / "theirs.db"
    assert "imported experiment 'secrets'" in ok("import", archive, "--db", dest)
    ok("report", "secrets", "--db", dest, "--out", tmp_path / "report")
    # Back into the database it came from: the same experiment, whose spec there still has its secrets.
    home_again = cli("import", archive, "--db", db)
    assert "with another spec text" in one_error_line(home_again)


def test_the_scrubber_keeps_the_data_and_takes_the_private_out() -> None:
    from clonechat.share.private import PathKind, Private
    from clonechat.share.scrub import Kind, Scrubber

    scrubber = Scrubber(Private(("s3cr3t-value-x",), (("/home/me", PathKind.HOME), ("/work/w", PathKind.WORKING))))
    # Model text keeps its paths and URLs; only exact secrets and the known directories go.
    content = "I keep /etc/passwd and http://u:p@x.org, s3cr3t-value-x, /home/me. Not /home/meg or /x/home/me."
    assert scrubber.content(content) == (
        "I keep /etc/passwd and http://u:p@x.org, [redacted], [home]. Not /home/meg or /x/home/me."
    )
    metadata = "GET https://bob:pw@api.x/v1?a=1&api_key=zz9: /work/w/runs/x.db missing, see /opt/m/x.gguf"
    assert scrubber.metadata(metadata) == (
        "GET https://[redacted]@api.x/v1?a=1&api_key=[redacted]: [path] missing, see [path]"
    )
    assert scrubber.counts == {
        Kind.SECRET: 1,
        Kind.HOME: 1,
        Kind.URL_CREDENTIALS: 1,
        Kind.URL_PARAMETER: 1,
        Kind.WORKING: 1,
        Kind.PATH: 1,
    }
    # JSON keeps its exact text when nothing changes, and ids and hashes are never touched.
    stored = '{"a":  [1, "/home/me/x"], "h": "' + "ab" * 32 + '"}'
    assert scrubber.json_text('{"a":  1}', scrubber.metadata) == '{"a":  1}'
    assert json.loads(scrubber.json_text(stored, scrubber.content)) == {"a": [1, "[home]/x"], "h": "ab" * 32}
    # A document (the report) as HTML and JSON spell the same values.
    page = '<p>s3cr3t-value-x &#47;home&#47;me</p><script>{"p": "\\/work\\/w"}</script>'
    assert scrubber.document(page) == '<p>[redacted] [home]</p><script>{"p": "[working-dir]"}</script>'


# --- bad input -----------------------------------------------------------------------------------


def rewritten(archive: Path, target: Path, change: dict[str, bytes]) -> Path:
    """A copy of ``archive`` with some members' bytes replaced (the manifest as it was, unless
    ``change`` replaces it too)."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(target, "w") as copy:
        for name in source.namelist():
            copy.writestr(name, change.get(name, source.read(name)))
    return target


def test_bad_files_are_one_line_and_write_nothing(archive: Path, pilot: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine.db"
    (tmp_path / "pilot.toml").write_text(PILOT_SPEC.replace('name = "pilot"', 'name = "mine"'))
    ok("batch", tmp_path / "pilot.toml", "--db", mine)
    before = dump(mine)
    fresh = tmp_path / "fresh.db"

    (tmp_path / "notes.txt").write_text("some notes\n")
    (tmp_path / "random.bin").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)  # a JPEG, say
    data = members(archive)[f"data/{PILOT}.jsonl"]
    tampered = rewritten(
        archive, tmp_path / "tampered.zip", {f"data/{PILOT}.jsonl": data.replace("reply", "REPLY").encode()}
    )
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("README.txt", "not clonechat's")
    manifest = json.loads(members(archive)["manifest.json"])
    newer = rewritten(
        archive, tmp_path / "newer.zip", {"manifest.json": json.dumps({**manifest, "format_version": 2}).encode()}
    )
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    # A consistent archive (checksums recomputed) whose data has a row from a newer clonechat.
    lines = data.splitlines()
    first = json.loads(lines[0])
    first["nodes"][0]["mood"] = "cheerful"
    odd = "\n".join([lines[0], json.dumps(first), *lines[2:]]) + "\n"
    entry = {"sha256": hashlib.sha256(odd.encode()).hexdigest(), "size": len(odd.encode())}
    manifest_odd = {**manifest, "members": {**manifest["members"], f"data/{PILOT}.jsonl": entry}}
    newer_rows = rewritten(
        archive,
        tmp_path / "newer-rows.zip",
        {f"data/{PILOT}.jsonl": odd.encode(), "manifest.json": json.dumps(manifest_odd).encode()},
    )
    neither = "is neither a clonechat share archive (zip) nor a JSONL export"
    cases = {
        tmp_path / "notes.txt": f"{tmp_path / 'notes.txt'} {neither}: line 1 is not JSON",
        tmp_path / "random.bin": f"{neither}: it is not text",
        tampered: f"{tampered}: data/{PILOT}.jsonl does not match its sha256 in manifest.json: "
        "the archive is corrupt or was changed",
        foreign: f"{foreign}: a zip file without manifest.json: not a clonechat share archive",
        newer: "share format version 2 is newer than this clonechat's (1): upgrade clonechat to import it",
        truncated: neither,
        newer_rows: f"{newer_rows}: data/{PILOT}.jsonl line 2: nodes[0]: node has no column 'mood' "
        "(written by a newer clonechat?)",
        tmp_path / "missing.zip": "missing.zip: no such file",
    }
    for file, message in cases.items():
        for dest in (mine, fresh):
            line = one_error_line(cli("import", file, "--db", dest))
            assert message in line, (file, line)
        assert dump(mine) == before and not fresh.exists()
    bad_name = cli("import", archive, "--as", "no spaces", "--db", mine)
    assert "--as 'no spaces': an experiment name is letters" in one_error_line(bad_name)
    assert bad_name.exit_code == 2 and dump(mine) == before


def test_sharing_an_unknown_experiment_is_one_line(pilot: Path, tmp_path: Path) -> None:
    before = dump(pilot)
    result = cli("share", "nope", "--db", pilot, "--out", tmp_path / "nope.zip")
    assert one_error_line(result) == f"error: no experiment named 'nope' in {pilot} (known: {PILOT})"
    assert result.exit_code == 1
    assert not (tmp_path / "nope.zip").exists() and dump(pilot) == before
    missing = cli("share", PILOT, "--db", tmp_path / "none.db")
    assert one_error_line(missing).startswith("error: ") and not (tmp_path / "none.db").exists()
