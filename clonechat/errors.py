"""Exceptions raised by clonechat.

Every error a user can cause or meet derives from :class:`ClonechatError`, whose ``str()`` is
one line saying what went wrong and where; the CLI prints exactly that line and exits non-zero.

    ClonechatError
    ├── ConfigError          bad command-line value, unknown model or condition
    ├── TemplateError        a prompt template is malformed or a variable is unknown/missing
    ├── StoreError           the run database cannot be opened, is corrupt or too new
    │   └── NotFoundError    no dialogue/node with that id
    ├── QueryError           an analysis query is refused (it would write) or is not valid SQL
    ├── MissingExtraError    a feature needs an optional package (pyarrow, pandas)
    └── ProviderError        a model call failed
        └── RetryableProviderError   ...in a way worth retrying (rate limit, overload, network)
"""

from __future__ import annotations

from clonechat.redaction import without_credentials


class ClonechatError(Exception):
    """Base of every error clonechat reports to its user."""


class ConfigError(ClonechatError):
    """A setting given by the user is invalid."""


class TemplateError(ClonechatError):
    """A prompt template cannot be loaded or rendered."""


class StoreError(ClonechatError):
    """The run database cannot be used."""


class NotFoundError(StoreError):
    """A requested row does not exist."""


class QueryError(ClonechatError):
    """A query cannot run: it would change the database, or SQLite rejects it."""


class MissingExtraError(ClonechatError):
    """A feature needs an optional dependency that is not installed."""


class ProviderError(ClonechatError):
    """A model call failed and retrying will not help.

    Its message often names the endpoint; a password or key in that URL is replaced here, so it
    never reaches a stored error, a log line or the terminal."""

    def __init__(self, message: str) -> None:
        super().__init__(without_credentials(message))


class RetryableProviderError(ProviderError):
    """A model call failed in a way that may succeed if tried again.

    ``retry_after`` is the server's requested wait in seconds, when it gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
