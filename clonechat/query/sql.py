"""The read-only SQL console, under the name it had before the read layer
(:mod:`clonechat.read.console` holds it now): ``connect``, ``read_only``, ``run``."""

from __future__ import annotations

from clonechat.read.console import QueryResult, ReadOnlyConnection, connect, read_only, run

__all__ = ["QueryResult", "ReadOnlyConnection", "connect", "read_only", "run"]
