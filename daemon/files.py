"""File operations of the daemon: hashing, atomic writes, and moving originals out of the inbox."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

HASH_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    size_bytes: int


def hash_file(path: Path) -> FileDigest:
    """SHA-256 and size of the file's bytes, read in chunks (never the whole file in memory)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return FileDigest(digest.hexdigest(), size)


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through `write`, visible under `path` only once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def move_file(source: Path, destination: Path) -> None:
    """Move `source` to `destination`, across filesystems too (an inbox on a network share).

    A copy is synced before the source is removed, so a crash leaves two copies, never none.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, destination)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    with open(source, "rb") as reader, open(temporary, "wb") as writer:
        shutil.copyfileobj(reader, writer, HASH_CHUNK_BYTES)
        writer.flush()
        os.fsync(writer.fileno())
    os.replace(temporary, destination)
    source.unlink()


def free_name(folder: Path, name: str, tag: str) -> Path:
    """`folder/name`, or `folder/stem-tag.ext` when that name is already taken."""
    candidate = folder / name
    if not candidate.exists():
        return candidate
    plain = Path(name)
    return folder / f"{plain.stem}-{tag}{plain.suffix}"
