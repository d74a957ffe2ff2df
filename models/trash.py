"""Moving a deleted image's original into `paths.trash` without ever losing it or leaving half of it.

A delete puts the files in the trash under temporary names first, before its record goes:
a trash that is missing, a file, read-only or full refuses there, and the record and the
original stay as they were. Only once the record is gone are the temporaries renamed into
place (a rename within one folder needs no room) and the originals removed, so a crash at any
point leaves the bytes in the data folder, in the trash, or both, never nowhere and never cut
short under a trash name.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from models.files import CHUNK_BYTES
from models.store_fault import StoreFault

# No room, as the filesystem or a quota says it.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class TrashUnavailable(Exception):
    """The trash cannot take the files: `full` when it has no room, else it is not a writable
    folder. The message is for the server's log (it may name paths)."""

    def __init__(self, message: str, *, full: bool) -> None:
        super().__init__(message)
        self.full = full


@dataclass
class Staged:
    """Files copied or linked into the trash under temporary names, waiting for the record's
    delete to commit (then `keep`) or to be refused (then `discard`)."""

    moves: list[tuple[Path, Path, Path]] = field(default_factory=list)  # (source, temporary, final)

    def keep(self) -> None:
        """The record is gone: the trash copies take their names and the sources go."""
        for source, temporary, final in self.moves:
            os.replace(temporary, final)
            source.unlink(missing_ok=True)
        self.moves.clear()

    def discard(self) -> None:
        """The record stays: nothing of this delete is left in the trash."""
        for _source, temporary, _final in self.moves:
            temporary.unlink(missing_ok=True)
        self.moves.clear()


def stage(files: list[tuple[Path, str]], trash_dir: Path) -> Staged:
    """Each existing (source, name in the trash) put into `trash_dir` under a temporary name.

    TrashUnavailable when the trash cannot take them; then nothing is left in it. Sources
    already gone are skipped: a delete repeated after a crash, or a file never made.
    """

    def from_file(source: Path) -> Callable[[Path], Path | None]:
        def put(temporary: Path) -> Path | None:
            if not source.is_file():
                return None
            _put(source, temporary)
            return source

        return put

    return _stage([(from_file(source), name) for source, name in files], trash_dir)


def stage_fetched(fetches: list[tuple[Callable[[Path], object], str]], trash_dir: Path) -> Staged:
    """As `stage`, for objects of a store that is not this machine's: each `fetch(temporary)`
    writes one there (FileNotFoundError: it is gone already, and skipped). The objects
    themselves are removed with the record's other files."""

    def from_store(fetch: Callable[[Path], object]) -> Callable[[Path], Path | None]:
        def put(temporary: Path) -> Path | None:
            try:
                fetch(temporary)
            except FileNotFoundError:
                return None
            return temporary  # nothing of this machine's to remove after

        return put

    return _stage([(from_store(fetch), name) for fetch, name in fetches], trash_dir)


def _stage(puts: list[tuple[Callable[[Path], Path | None], str]], trash_dir: Path) -> Staged:
    staged = Staged()
    try:
        trash_dir.mkdir(parents=True, exist_ok=True)
        if not trash_dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(trash_dir))
        for put, name in puts:
            final = trash_dir / name
            temporary = trash_dir / f".{name}.{os.getpid()}.tmp"
            source = put(temporary)
            if source is not None:
                staged.moves.append((source, temporary, final))
    except StoreFault:  # the store's fault, not the trash's
        staged.discard()
        raise
    except OSError as error:
        staged.discard()
        raise TrashUnavailable(f"the trash {trash_dir} cannot take a deleted original: {error}", full=error.errno in _FULL_ERRNOS) from error
    except BaseException:
        staged.discard()
        raise
    return staged


def _put(source: Path, temporary: Path) -> None:
    """`source`'s bytes at `temporary`: a hard link on the same filesystem (no room needed),
    else a synced copy, after checking the trash has room for it."""
    temporary.unlink(missing_ok=True)  # a kill's leftover of this same name
    try:
        os.link(source, temporary)
        return
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
    usage = os.statvfs(temporary.parent)
    if usage.f_bavail * usage.f_frsize < source.stat().st_size:
        raise OSError(errno.ENOSPC, "no room for the original", str(temporary.parent))
    try:
        with open(source, "rb") as reader, open(temporary, "xb") as writer:
            shutil.copyfileobj(reader, writer, CHUNK_BYTES)
            writer.flush()
            os.fsync(writer.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)  # never a cut-short copy left behind
        raise
