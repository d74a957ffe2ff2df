"""File operations of the daemon: opening inbox files safely, hashing, atomic writes, and moving
originals out of the inbox."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from daemon.errors import NotRegularFile
from models.names import ERROR_NOTE_SUFFIX, MAX_NAME_BYTES, fit_name

HASH_CHUNK_BYTES = 1024 * 1024
# What the daemon adds to a name in failed/: "-<sha prefix>" for a clash, ".error.txt" beside it.
_TAG_BYTES = 1 + 12

# O_NOFOLLOW: a symlink is refused, never followed out of the inbox. O_NONBLOCK: opening a FIFO
# does not wait for a writer (regular files ignore it), so the fstat below can refuse it.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Identity = tuple[int, int, int]  # inode, size, mtime: changes if the file is rewritten


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    size_bytes: int
    identity: Identity
    # More than the limit it was hashed with: only limit + 1 bytes were read, and `sha256` is
    # of those bytes and the size, not of the whole file.
    over_limit: bool = False


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in a word or two."""
    for test, name in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "folder"),
    ):
        if test(mode):
            return name
    return "special file"


def file_identity(path: Path) -> Identity:
    """The identity of the file at `path` itself: a symlink put in its place is another file."""
    status = os.lstat(path)
    return status.st_ino, status.st_size, status.st_mtime_ns


def open_regular(path: Path) -> BinaryIO:
    """Open `path` for reading only if it is a regular file (never through a symlink, never a
    FIFO, socket or device, which could block or never end); NotRegularFile otherwise."""
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotRegularFile("symbolic link") from None
        raise
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(file_kind(mode))
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def hash_file(path: Path, max_bytes: int) -> FileDigest:
    """SHA-256 and size of a regular file's bytes, read in chunks, never more than
    `max_bytes` + 1 of them: a file over the limit is known to be so without reading it all."""
    digest = hashlib.sha256()
    size = 0
    with open_regular(path) as handle:
        while size <= max_bytes and (chunk := handle.read(min(HASH_CHUNK_BYTES, max_bytes + 1 - size))):
            digest.update(chunk)
            size += len(chunk)
        status = os.fstat(handle.fileno())
    identity = (status.st_ino, status.st_size, status.st_mtime_ns)
    if size <= max_bytes:
        return FileDigest(digest.hexdigest(), size, identity)
    # Two large files with the same first bytes and size count as the same file.
    digest.update(f"\0size={status.st_size}".encode())
    return FileDigest(digest.hexdigest(), max(size, status.st_size), identity, over_limit=True)


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
    with open_regular(source) as reader, open(temporary, "wb") as writer:
        shutil.copyfileobj(reader, writer, HASH_CHUNK_BYTES)
        writer.flush()
        os.fsync(writer.fileno())
    os.replace(temporary, destination)
    source.unlink()


def free_name(folder: Path, name: str, tag: str) -> Path:
    """`folder/name`, or `folder/stem-tag.ext` when that name is already taken; short enough
    for the tag and an error note's suffix to fit the filesystem's limit on a name."""
    name = fit_name(name, MAX_NAME_BYTES - len(ERROR_NOTE_SUFFIX) - _TAG_BYTES)
    candidate = folder / name
    if not os.path.lexists(candidate):
        return candidate
    plain = Path(name)
    return folder / f"{plain.stem}-{tag[:12]}{plain.suffix}"


# A temporary being written is touched every few milliseconds: one this old was left by a kill.
STALE_TEMPORARY_S = 600.0


def remove_stale_temporaries(folders: list[Path], *, older_than_s: float = STALE_TEMPORARY_S) -> int:
    """Delete the temporaries of `write_atomically` and `move_file` that a kill left behind in
    the daemon's own folders; returns how many. Other daemons may share the folders and be
    writing theirs right now, so only those untouched for `older_than_s` go."""
    removed = 0
    cutoff = time.time() - older_than_s
    for top in folders:
        for folder, _subfolders, names in os.walk(top):
            for name in names:
                if name.startswith(".") and name.endswith(".tmp"):
                    path = os.path.join(folder, name)
                    try:
                        if os.lstat(path).st_mtime < cutoff:
                            os.unlink(path)
                            removed += 1
                    except FileNotFoundError:
                        pass
    return removed
