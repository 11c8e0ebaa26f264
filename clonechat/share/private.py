"""What is private on this machine, so that ``clonechat share`` can keep it out of an archive.

Secrets are exact values: the keys of the variables models name in ``api_key_env`` (in the
registry files and in the spec's inline models), every environment variable whose name says it
holds a credential (``KEY``, ``TOKEN``, ``SECRET``, ``PASSWORD``), every value of a ``.env`` file
in the working directory, and the passwords in the models' base URLs and the database's URL.
Keys are never stored (the providers read them when they start), but they can still reach a
row: pasted into a prompt variable, echoed in a server's error text, typed into a fork.

A value shorter than :data:`MIN_SECRET_CHARS` is not treated as a secret: replacing ``1`` or
``true`` wherever it occurs would destroy the data, and no real credential is that short.

Paths are the working directory, the home directory and the database's folder: a share names
none of them. Only what is gathered here is counted and replaced; the values themselves never
leave this module's caller.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit

from clonechat.location import DbLocation, ServerDatabase

#: Shorter values are never treated as secrets (see the module docstring).
MIN_SECRET_CHARS = 8
#: An environment variable whose name contains one of these (any case) holds a credential.
SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


class PathKind(StrEnum):
    """Which known local path a piece of text named."""

    DATABASE = "database folder"
    WORKING = "working directory"
    HOME = "home directory"


@dataclass(frozen=True)
class Machine:
    """The facts about this machine that decide what is private: its environment, the working
    and home directories, the ``.env`` file's values, and the models the registry files define
    (their ``api_key_env`` and ``base_url``). :meth:`current` reads them; tests pass their own."""

    environ: Mapping[str, str]
    cwd: Path
    home: Path
    dotenv: Mapping[str, str | None] = field(default_factory=dict)
    #: (api_key_env, base_url) of every model the registry files define.
    models: tuple[tuple[str | None, str | None], ...] = ()

    @classmethod
    def current(cls) -> Machine:
        """This process's machine. A registry file that cannot be read is the usual one-line
        error: without it, the keys its models name could not be looked for."""
        from dotenv import dotenv_values

        from clonechat.registry import load_registry

        models = tuple((spec.api_key_env, spec.base_url) for spec in load_registry().values())
        return cls(dict(os.environ), Path.cwd(), Path.home(), dotenv_values(".env"), models)


@dataclass(frozen=True)
class Private:
    """What to take out: exact secret values and known local paths, longest first (so a value
    containing another is replaced whole)."""

    secrets: tuple[str, ...]
    paths: tuple[tuple[str, PathKind], ...]


def spec_models(spec: str | None) -> list[tuple[str | None, str | None]]:
    """(api_key_env, base_url) of each model a spec defines inline (``[models.NAME]``); none if
    the text is not TOML (a stored spec always is)."""
    if not spec:
        return []
    try:
        models = tomllib.loads(spec).get("models", {})
    except tomllib.TOMLDecodeError:
        return []
    found = []
    for entry in models.values() if isinstance(models, dict) else ():
        if isinstance(entry, dict):
            key, url = entry.get("api_key_env"), entry.get("base_url")
            found.append((key if isinstance(key, str) else None, url if isinstance(url, str) else None))
    return found


def _url_password(text: str) -> str | None:
    if "://" not in text:
        return None
    try:
        password = urlsplit(text.strip()).password
    except ValueError:
        return None
    return unquote(password) if password else None


def _is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def _known_paths(machine: Machine, database: DbLocation) -> list[tuple[str, PathKind]]:
    places: list[tuple[Path, PathKind]] = [(machine.cwd, PathKind.WORKING), (machine.home, PathKind.HOME)]
    if isinstance(database, Path):
        places.append((database.absolute().parent, PathKind.DATABASE))
    paths: dict[str, PathKind] = {}
    for place, kind in places:
        for spelling in {str(place), str(place.resolve())}:
            # The root (or a drive) names nothing private, and replacing it would rewrite every path.
            if len(Path(spelling).parts) > 1:
                paths.setdefault(spelling, kind)
    return sorted(paths.items(), key=lambda item: (-len(item[0]), item[0]))


def private_values(machine: Machine, *, spec: str | None, database: DbLocation) -> Private:
    """Everything private to look for when sharing an experiment with this ``spec`` from
    ``database`` on ``machine``."""
    models = [*machine.models, *spec_models(spec)]
    key_names = {key for key, _ in models if key}
    values: set[str] = set()
    for name in key_names:
        for source in (machine.environ.get(name), machine.dotenv.get(name)):
            if source:
                values.add(source)
    values |= {value for name, value in machine.environ.items() if _is_secret_name(name)}
    values |= {value for value in machine.dotenv.values() if value}
    urls: list[str] = [url for _, url in models if url]
    urls += [*machine.environ.values(), *(v for v in machine.dotenv.values() if v)]
    if isinstance(database, ServerDatabase):
        urls.append(database.url)
    values |= {password for url in urls if (password := _url_password(url))}
    secrets = sorted((v.strip() for v in values if len(v.strip()) >= MIN_SECRET_CHARS), key=lambda v: (-len(v), v))
    return Private(tuple(dict.fromkeys(secrets)), tuple(_known_paths(machine, database)))
