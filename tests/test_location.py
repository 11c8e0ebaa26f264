"""``--db`` takes a path or a PostgreSQL URL; a password in the URL is used, never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from clonechat.cli import app
from clonechat.location import ServerDatabase, db_location
from tests.pg_server import PostgresServer


def test_paths_and_urls_are_told_apart() -> None:
    assert db_location("runs/x.db") == Path("runs/x.db")
    assert db_location(Path("a.db")) == Path("a.db")
    for url in ("postgresql://u@h:5432/d", "postgres://u@h/d", "postgresql+psycopg://u@h/d"):
        assert isinstance(db_location(url), ServerDatabase)
    assert db_location("postgresql.db") == Path("postgresql.db")  # a file that happens to be named so


def test_a_password_is_kept_for_connecting_and_never_shown() -> None:
    location = ServerDatabase("postgresql://alice:s3cret@db.lab:6543/runs")
    assert str(location) == "postgresql://alice:***@db.lab:6543/runs"
    assert "s3cret" in location.sqlalchemy_url and location.sqlalchemy_url.startswith("postgresql+psycopg://")
    assert str(ServerDatabase("postgres://bob@h/d")) == "postgresql://bob@h/d"


def test_the_environment_names_a_server(monkeypatch: pytest.MonkeyPatch, pg_server: PostgresServer) -> None:
    url = pg_server.create_database("from_env")
    monkeypatch.setenv("CLONECHAT_DB", url)
    assert "no dialogues yet" in CliRunner().invoke(app, ["ls"]).output
    result = CliRunner().invoke(app, ["db", "upgrade"])  # never turns an empty database into one
    assert result.exit_code == 1
    assert f"{url} has no clonechat tables yet" in result.stderr


@pytest.mark.parametrize("command", [["ls"], ["show", "01"], ["query", "SELECT 1"], ["workers"], ["db", "upgrade"]])
def test_an_unreachable_server_is_one_line_without_the_password(command: list[str]) -> None:
    url = "postgresql://alice:s3cret@127.0.0.1:1/runs"
    result = CliRunner().invoke(app, [*command, "--db", url])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "s3cret" not in result.output + result.stderr
    assert "127.0.0.1" in lines[0]


def test_a_batch_on_an_unreachable_server_writes_nothing_and_says_so(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(
        'name = "s"\nreplicates = 1\nmax_turns = 1\nmodel_a = "scripted"\n[[conditions]]\ntemplate = "no-frame"\n'
    )
    result = CliRunner().invoke(app, ["batch", str(spec), "--db", "postgresql://alice:s3cret@127.0.0.1:1/runs"])
    assert result.exit_code == 1, result.output
    assert "s3cret" not in result.output + result.stderr
    assert result.stderr.strip().count("\n") == 0 and "cannot use database postgresql://alice:***@" in result.stderr
