"""Turning exceptions into one clear line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from clonechat.errors import ClonechatError, ConfigError, QueryError, TemplateError

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _first_clonechat_error(exc: BaseException) -> ClonechatError | None:
    if isinstance(exc, ClonechatError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_clonechat_error(inner)
            if found is not None:
                return found
    return None


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def report_errors(fn: Callable[[], T]) -> T:
    """Run ``fn``; a clonechat error becomes ``error: ...`` on stderr and a non-zero exit."""
    try:
        return fn()
    except (ClonechatError, BaseExceptionGroup) as exc:
        error = _first_clonechat_error(exc)
        if error is None:
            raise
        fail(str(error), EXIT_USAGE if isinstance(error, ConfigError | TemplateError | QueryError) else EXIT_FAILED)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
