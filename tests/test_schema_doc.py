"""docs/schema.md is generated from the models and views and must be current; every column
and view is described."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from clonechat.cli import app
from clonechat.store.schema_doc import column_comments, schema_markdown, table_models, view_columns
from clonechat.store.views import VIEW_DOCS

DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"


def test_schema_doc_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == schema_markdown(), (
        "docs/schema.md is stale: run 'clonechat schema --write docs/schema.md'"
    )


def test_the_schema_command_prints_the_same_text() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0 and result.output == schema_markdown()


def test_every_column_that_is_not_a_key_is_described() -> None:
    missing = []
    for model in table_models():
        comments = column_comments(model)
        for column in model.__table__.columns:  # type: ignore[attr-defined]
            if not (column.foreign_keys or column.primary_key) and column.name not in comments:
                missing.append(f"{model.__tablename__}.{column.name}")
    assert missing == []


def test_every_view_is_described_and_every_description_has_a_view() -> None:
    assert set(view_columns()) == set(VIEW_DOCS)


def test_the_doc_lists_every_table_and_view() -> None:
    text = schema_markdown()
    for model in table_models():
        assert f"### `{model.__tablename__}`" in text
    for view in VIEW_DOCS:
        assert f"### `{view}`" in text
