"""Command-line interface."""

from clonechat.cli import querying  # noqa: F401  (registers query, search, keywords, export, schema)
from clonechat.cli.app import app, main

__all__ = ["app", "main"]
