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
    identity: tuple[int, int, int]  # inode, size, mtime: changes if the file is rewritten


def file_identity(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def hash_file(path: Path) -> FileDigest:
    """SHA-256 and size of the file's bytes, read in chunks (never the whole file in memory)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
        stat = os.fstat(handle.fileno())
    return FileDigest(digest.hexdigest(), size, (stat.st_ino, stat.st_size, stat.st_mtime_ns))


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

    Within a filesystem: a hard link, then the unlink of the source. The watched inbox then
    sees a deletion, which watchdog passes on at once, where a rename out of it is an unpaired
    move that watchdog holds back for 0.5 s (and every event queued behind it: measured, it
    delayed the next upload's registration by that much). Across filesystems a copy is synced
    before the source is removed. Either way a crash leaves two copies, never none.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except FileExistsError:
        os.replace(source, destination)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:  # a filesystem without hard links: a rename will do
            try:
                os.replace(source, destination)
                return
            except OSError as rename_error:
                if rename_error.errno != errno.EXDEV:
                    raise
        _copy_then_remove(source, destination)
        return
    source.unlink()


def _copy_then_remove(source: Path, destination: Path) -> None:
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
