"""Inbox files as the daemon knows them: their identity (a file rewritten or replaced is another
one) and their digest, read safely (models.files.open_regular)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from models.files import CHUNK_BYTES, open_regular

Identity = tuple[int, int, int]  # inode, size, mtime: changes if the file is rewritten


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    size_bytes: int
    identity: Identity
    # More than the limit it was hashed with: only limit + 1 bytes were read, and `sha256` is
    # of those bytes and the size, not of the whole file.
    over_limit: bool = False


def file_identity(path: Path) -> Identity:
    """The identity of the file at `path` itself: a symlink put in its place is another file."""
    status = os.lstat(path)
    return status.st_ino, status.st_size, status.st_mtime_ns


def hash_file(path: Path, max_bytes: int) -> FileDigest:
    """SHA-256 and size of a regular file's bytes, read in chunks, never more than
    `max_bytes` + 1 of them: a file over the limit is known to be so without reading it all."""
    digest = hashlib.sha256()
    size = 0
    with open_regular(path) as handle:
        while size <= max_bytes and (chunk := handle.read(min(CHUNK_BYTES, max_bytes + 1 - size))):
            digest.update(chunk)
            size += len(chunk)
        status = os.fstat(handle.fileno())
    identity = (status.st_ino, status.st_size, status.st_mtime_ns)
    if size <= max_bytes:
        return FileDigest(digest.hexdigest(), size, identity)
    # Two large files with the same first bytes and size count as the same file.
    digest.update(f"\0size={status.st_size}".encode())
    return FileDigest(digest.hexdigest(), max(size, status.st_size), identity, over_limit=True)
