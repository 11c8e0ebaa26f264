"""The share archive as a file: written the same way every time, read only once it checks out.

**Deterministic.** Members are written in the order given, each with the same timestamp
(1980-01-01, the zip format's first day), permissions and compression, and nothing else varies:
sharing the same rows twice gives the same bytes, so an archive's checksum identifies what it
holds (with the same clonechat and zlib). It is written beside its destination and moved into
place, so a failed share never leaves half an archive under the name.

**Verified before it is read.** :func:`open_data` accepts a share archive only when its
manifest validates and every member it lists is there, with its size and SHA-256, and nothing
else is; then it hands out the JSONL lines. A plain JSONL export (``clonechat export --format
jsonl``) is accepted as it is: it has no manifest to check. Anything else is one line naming the
file and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
import zlib
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from clonechat.errors import ConfigError
from clonechat.share.manifest import NAME as MANIFEST_NAME
from clonechat.share.manifest import Manifest, Member, parse_manifest

#: Every member's timestamp: the earliest a zip can hold.
MEMBER_TIME = (1980, 1, 1, 0, 0, 0)
#: A regular file, rw-r--r--, as Unix zip tools record it.
MEMBER_MODE = 0o100644 << 16
_UNIX = 3
_CHUNK = 1 << 20


def member(name: str, path: Path) -> tuple[str, Member]:
    """A member's manifest entry (checksum and size) from the file that holds it."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return name, Member(sha256=digest.hexdigest(), size=path.stat().st_size)


def write_archive(path: Path, members: Sequence[tuple[str, Path]]) -> None:
    """Write ``members`` (name in the archive, file holding it), in this order, as the zip at
    ``path``; an error writing it is one line, and leaves nothing under ``path``."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, file in members:
                info = zipfile.ZipInfo(name, date_time=MEMBER_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = _UNIX
                info.external_attr = MEMBER_MODE
                large = file.stat().st_size >= zipfile.ZIP64_LIMIT
                with file.open("rb") as source, archive.open(info, "w", force_zip64=large) as target:
                    shutil.copyfileobj(source, target, _CHUNK)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Data:
    """The JSONL lines of a share archive or export, and where they came from."""

    #: How errors name the data: ``FILE: data/NAME.jsonl`` in an archive, else ``FILE``.
    label: str
    #: The archive's manifest (None for a plain JSONL export).
    manifest: Manifest | None
    lines: Iterator[str]


@contextmanager
def open_data(path: Path) -> Iterator[Data]:
    """The JSONL lines of the share archive or JSONL export at ``path``, once it checks out
    (see the module docstring); a ConfigError naming the file and the problem if not."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file" if not path.exists() else f"{path} is not a file")
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not is_zip:
        with path.open("rb") as raw:
            _check_jsonl(raw, path)
            with closing(_text_lines(raw, str(path))) as lines:
                yield Data(str(path), None, lines)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = _verified(archive, path)
            label = f"{path}: {manifest.data}"
            with archive.open(manifest.data) as stream, closing(_text_lines(stream, label)) as lines:
                yield Data(label, manifest, lines)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ConfigError(f"{path}: the zip archive is damaged ({exc})") from None


def _verified(archive: zipfile.ZipFile, path: Path) -> Manifest:
    names = [info.filename for info in archive.infolist()]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: the archive holds a member twice: not a clonechat share archive")
    if MANIFEST_NAME not in names:
        raise ConfigError(f"{path}: a zip file without {MANIFEST_NAME}: not a clonechat share archive")
    with archive.open(MANIFEST_NAME) as stream:
        manifest = parse_manifest(stream.read(2_000_000), str(path))
    present = set(names) - {MANIFEST_NAME}
    if missing := sorted(set(manifest.members) - present):
        raise ConfigError(f"{path}: {missing[0]} is listed in {MANIFEST_NAME} but missing from the archive")
    if extra := sorted(present - set(manifest.members)):
        raise ConfigError(f"{path}: {extra[0]} is in the archive but not listed in {MANIFEST_NAME}")
    for name in names:
        if name != MANIFEST_NAME:
            _check_member(archive, name, manifest.members[name], path)
    return manifest


def _check_member(archive: zipfile.ZipFile, name: str, expected: Member, path: Path) -> None:
    """The member's bytes against its manifest entry, read in blocks and never past its size."""
    digest = hashlib.sha256()
    size = 0
    with archive.open(name) as stream:
        while block := stream.read(min(_CHUNK, expected.size - size + 1)):
            size += len(block)
            if size > expected.size:
                break
            digest.update(block)
    if size != expected.size:
        raise ConfigError(
            f"{path}: {name} is not the size {MANIFEST_NAME} gives ({expected.size:,} bytes): "
            "the archive is corrupt or was changed"
        )
    if digest.hexdigest() != expected.sha256:
        raise ConfigError(
            f"{path}: {name} does not match its sha256 in {MANIFEST_NAME}: the archive is corrupt or was changed"
        )


def _check_jsonl(raw: IO[bytes], path: Path) -> None:
    """A file that is not a zip must be a JSONL export: its first line a JSON object."""
    first = raw.readline(10_000_000).strip()
    raw.seek(0)
    neither = f"{path} is neither a clonechat share archive (zip) nor a JSONL export"
    try:
        record = json.loads(first.decode("utf-8")) if first else None
    except UnicodeDecodeError:
        raise ConfigError(f"{neither}: it is not text") from None
    except ValueError:
        raise ConfigError(f"{neither}: line 1 is not JSON") from None
    if record is None:
        raise ConfigError(f"{path} is empty: no dialogues to import")
    if not isinstance(record, dict) or "experiment" not in record or "dialogue" not in record:
        raise ConfigError(f"{neither}: line 1 is not an exported dialogue")


def _text_lines(raw: IO[bytes], label: str) -> Generator[str, None, None]:
    """The lines of ``raw`` as text (closed with the generator, before ``raw`` is)."""
    try:
        yield from io.TextIOWrapper(raw, encoding="utf-8", newline="")
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not UTF-8 text") from None
