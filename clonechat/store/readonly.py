"""TEMPORARY shim while consumers move to :mod:`clonechat.read.connect` (issue 15)."""

from __future__ import annotations

from clonechat.read.connect import check_version as check_version
from clonechat.read.connect import open_reader as readonly_database
from clonechat.read.connect import readonly_uri as readonly_uri

__all__ = ["check_version", "readonly_database", "readonly_uri"]
