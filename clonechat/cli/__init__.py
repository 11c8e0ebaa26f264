"""Command-line interface."""

import clonechat.cli.database  # noqa: F401  (registers db copy)
from clonechat.cli import querying  # noqa: F401  (registers query, search, keywords, export, schema)
from clonechat.cli.app import app, main

__all__ = ["app", "main"]
