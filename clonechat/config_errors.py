"""Turning one pydantic validation error into the reason part of a one-line config error.

Shared by the batch spec (``clonechat.batch.spec``) and the model registry
(``clonechat.registry``), so an unknown or missing key reads the same in every file.
"""

from __future__ import annotations

import difflib

from pydantic_core import ErrorDetails


def describe_error(error: ErrorDetails, known_keys: list[str], *, table: str = "") -> str:
    """Why ``error`` was raised, in words: unknown keys get a "did you mean" hint from
    ``known_keys``, missing keys are named. ``table`` (e.g. ``"defaults"``) says which table an
    unknown or missing key belongs to when the caller shows only the enclosing one."""
    kind = error["type"]
    inside = f" in {table}" if table else ""
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        close = difflib.get_close_matches(key, known_keys, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known_keys)})"
        return f"unknown key '{key}'{inside}{hint}"
    if kind == "missing":
        return f"required key '{error['loc'][-1]}'{inside} is missing"
    if kind == "string_pattern_mismatch":
        return "names may use letters, digits and _ . : + - (and must start with a letter or digit)"
    message = error["msg"]
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    return message
