"""Files of HTX's own folders, safely: opened only when regular (never through a symlink),
written atomically, moved without ever leaving none of two copies. The daemon, the store and
the commands share these; nothing here knows which folder holds what (models.store does)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from models.names import MAX_NAME_BYTES

# What a read of a whole file takes at a time: hashing, copying.
CHUNK_BYTES = 1024 * 1024

# O_NOFOLLOW: a symlink is refused, never followed out of the inbox. O_NONBLOCK: opening a FIFO
# does not wait for a writer (regular files ignore it), so the fstat below can refuse it.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotRegularFile(Exception):
    """A symlink, FIFO, socket, device or folder where a file was expected: never read."""

    def __init__(self, what: str) -> None:
        super().__init__(f"not a regular file ({what})")
        self.what = what


def folder_problem(folder: Path) -> str | None:
    """Why HTX cannot write in `folder`, in a few words; None when it can."""
    if not folder.is_dir():
        return "a folder of the data folder is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "no permission to write in the data folder"
    return None


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


def _temporary_for(path: Path) -> Path:
    """Where `path` is written before it takes its name: hidden, and named so that
    `remove_stale_temporaries` knows it; hashed when the name is too long to take more."""
    name = f".{path.name}.{os.getpid()}.tmp"
    if len(os.fsencode(name)) > MAX_NAME_BYTES:
        name = f".{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]}.{os.getpid()}.tmp"
    return path.with_name(name)


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through `write`, visible under `path` only once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_for(path)
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
    temporary = _temporary_for(destination)
    with open_regular(source) as reader, open(temporary, "wb") as writer:
        shutil.copyfileobj(reader, writer, CHUNK_BYTES)
        writer.flush()
        os.fsync(writer.fileno())
    os.replace(temporary, destination)
    source.unlink()


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


def current_user() -> str:
    """The name of the user this process runs as, for messages about permissions."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with this pid runs (a recycled pid counts as alive:
    its claims then wait for their lease to run out)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
