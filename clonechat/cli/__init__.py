"""Command-line interface."""

from clonechat.cli.app import app, main

__all__ = ["app", "main"]
