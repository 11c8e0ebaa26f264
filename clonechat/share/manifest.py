"""``manifest.json``: what a share archive holds, checked before anything in it is believed.

It names the format and its version (an archive from a newer clonechat is refused with a line
saying so, rather than half-read), the experiment (name and id) and the clonechat and schema
that wrote it, which member holds the data, and the SHA-256 and size of every other member: a
corrupt download, an edited file or a member added later is found before a row is imported.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clonechat.errors import ConfigError

NAME = "manifest.json"
FORMAT = "clonechat-share"
FORMAT_VERSION = 1
#: A manifest is a few hundred bytes; anything far bigger is not one.
MAX_BYTES = 1_000_000


class Member(BaseModel):
    """One member of the archive: its checksum and size in bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(BaseModel):
    """The archive's table of contents (every member but the manifest itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["clonechat-share"]
    format_version: Literal[1]
    experiment: str = Field(min_length=1)
    experiment_id: str = Field(min_length=1)
    clonechat_version: str
    #: The run database's schema version the rows were read at.
    schema_version: int = Field(ge=1)
    #: The member holding the JSONL export (``data/EXPERIMENT.jsonl``).
    data: str
    members: dict[str, Member]

    def text(self) -> str:
        """The manifest as the archive stores it (stable: the same manifest, the same bytes)."""
        return json.dumps(self.model_dump(), indent=2, ensure_ascii=False) + "\n"


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """The manifest in ``raw``; a ConfigError naming ``where`` and the first thing wrong."""
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{where}: {NAME} is {len(raw):,} bytes: not a clonechat share manifest")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{where}: {NAME} is not JSON ({exc})") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and data.get("format") == FORMAT and version > FORMAT_VERSION:
        raise ConfigError(
            f"{where}: share format version {data['format_version']} is newer than this clonechat's "
            f"({FORMAT_VERSION}): upgrade clonechat to import it"
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        place = ".".join(str(part) for part in error["loc"]) or "the manifest"
        raise ConfigError(f"{where}: {NAME}: {place}: {error['msg']}") from None
    if manifest.data not in manifest.members:
        raise ConfigError(f"{where}: {NAME} names {manifest.data!r} as the data, but lists no such member")
    return manifest
