"""Where an image's files live: the one module that knows it.

An image's files are objects under keys, the same strings as the database keeps in
`stored_path` and `thumb_*_path` and as the data folder's layout has always been:

    originals/<ab>/<sha256>.<ext>          the original, keyed by its content
    thumbnails/<ab>/<sha256>-<size>.<ext>  its thumbnails (size: small, medium)
    failed/<name>                          a file that failed, under the name it came with
    failed/<name>.error.txt                beside it: why it failed

A `Store` keeps objects under keys with the few operations an object store has too (put a
file or written bytes under a key, open with size and version, remove, list by prefix), so
that the daemon, the commands and the API need nothing else, and a store that is not a
folder can stand in. `FolderStore` is the data folder. The helpers below it (the thumbnails
of an image, a free name in failed/, the files a delete leaves) are written against `Store`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from models import trash
from models.config import Config
from models.files import folder_problem, move_file, remove_stale_temporaries, write_atomically
from models.names import MAX_NAME_BYTES, fit_name

ORIGINALS = "originals"
THUMBNAILS = "thumbnails"
FAILED = "failed"
FOLDERS = (ORIGINALS, THUMBNAILS, FAILED)
# Beside a file kept in failed/: why it failed.
ERROR_NOTE_SUFFIX = ".error.txt"
# What a name in failed/ may get added: "-<sha prefix>" for a clash, ".error.txt" beside it.
_TAG_CHARS = 12
_ADDED_BYTES = 1 + _TAG_CHARS + len(ERROR_NOTE_SUFFIX)


def original_key(sha256: str, extension: str) -> str:
    return f"{ORIGINALS}/{sha256[:2]}/{sha256}.{extension}"


def thumbnail_key(sha256: str, size_name: str, extension: str) -> str:
    return f"{THUMBNAILS}/{sha256[:2]}/{sha256}-{size_name}.{extension}"


def thumbnails_prefix(sha256: str) -> str:
    """The prefix every thumbnail of the image with these bytes has, whatever its format."""
    return f"{THUMBNAILS}/{sha256[:2]}/{sha256}-"


def note_key(failed_key: str) -> str:
    """The note beside a file in failed/ that says why it failed."""
    return failed_key + ERROR_NOTE_SUFFIX


def is_failed_copy(key: str) -> bool:
    return key.startswith(f"{FAILED}/")


def folder_of(key: str) -> str:
    """The part of the store a key is in ("thumbnails"), as a person knows it: for messages,
    which never name a server path."""
    return key.split("/", 1)[0]


@dataclass
class StoredObject:
    """An object opened for reading: `version` changes whenever its bytes may have (for a
    folder: size and modification time; for an object store: its ETag)."""

    reader: BinaryIO
    size: int
    version: str

    def __enter__(self) -> StoredObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()


class StoreProblem(Exception):
    """The store cannot be used now (a folder that is not one, no permission to write): a fault
    of the machine, for its administrator. `part` is where ("thumbnails"), never a server path;
    `cause` the OSError, when one said it."""

    def __init__(self, problem: str, part: str, cause: OSError | None = None) -> None:
        super().__init__(f"{problem}: {part}/")
        self.problem = problem
        self.part = part
        self.cause = cause


class Store(Protocol):
    """Objects under keys. OSError (FileNotFoundError for a key that is not there) is the
    store's fault, never the image's."""

    def prepare(self) -> int:
        """Make the store ready to write; how many leftovers of a killed writer it removed."""

    def check(self) -> None:
        """StoreProblem if the store cannot be written now."""

    def put_file(self, key: str, source: Path) -> None:
        """Move the file `source` in under `key` (it is gone from where it was after). A key
        already there keeps its bytes: keys of originals are their content, so a put repeated
        after a crash changes nothing."""

    def write(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        """Write an object through `write`, under `key` only once it is complete."""

    def open(self, key: str) -> StoredObject:
        """The object to read, with its size and version."""

    def exists(self, key: str) -> bool: ...

    def remove(self, key: str) -> None:
        """Remove the object, if it is there."""

    def list(self, prefix: str) -> Iterator[str]:
        """The keys that start with `prefix`."""

    def local_path(self, key: str) -> Path | None:
        """The object as a file on this machine, for what needs a file (a decoder, sendfile);
        None when the store keeps it elsewhere."""


class FolderStore:
    """The data folder: each key a file under `root` (its "/" the folder separator)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or parts[0] not in FOLDERS or ".." in parts:
            raise ValueError(f"not a key of the store: {key!r}")
        return self.root.joinpath(*parts)

    def _make_folders(self) -> list[Path]:
        folders = []
        for name in FOLDERS:
            folder = self.root / name
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreProblem("cannot make a folder of the data folder", name, error) from error
            folders.append(folder)
        return folders

    def prepare(self) -> int:
        # Other daemons may share the folder and write theirs now: only old leftovers go.
        return remove_stale_temporaries(self._make_folders())

    def check(self) -> None:
        for folder in self._make_folders():
            problem = folder_problem(folder)
            if problem is not None:
                raise StoreProblem(problem, folder.name)

    def put_file(self, key: str, source: Path) -> None:
        destination = self._path(key)
        if source == destination:
            return
        if os.path.lexists(destination):
            source.unlink(missing_ok=True)
            return
        move_file(source, destination)

    def write(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        write_atomically(self._path(key), write)

    def open(self, key: str) -> StoredObject:
        handle = open(self._path(key), "rb")
        status = os.fstat(handle.fileno())
        return StoredObject(handle, status.st_size, f"{status.st_size:x}-{status.st_mtime_ns:x}")

    def exists(self, key: str) -> bool:
        return os.path.lexists(self._path(key))

    def remove(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[str]:
        folder, _, start = prefix.rpartition("/")
        for path in self._path(folder).glob(f"{start}*"):
            yield f"{folder}/{path.name}"

    def local_path(self, key: str) -> Path:
        return self._path(key)


def open_store(config: Config) -> FolderStore:
    """The store a config names (made once, where the config is loaded)."""
    return FolderStore(config.data_dir)


def remove_thumbnails(store: Store, sha256: str) -> None:
    for key in list(store.list(thumbnails_prefix(sha256))):
        store.remove(key)


def write_note(store: Store, failed_key: str, text: str) -> None:
    store.write(note_key(failed_key), lambda handle: handle.write(text.encode("utf-8", errors="backslashreplace")))


def free_failed_key(store: Store, name: str, tag: str) -> str:
    """`failed/name`, or `failed/stem-tag.ext` when that name is taken; short enough for the tag
    and an error note's suffix to fit the filesystem's limit on a name."""
    name = fit_name(name, MAX_NAME_BYTES - _ADDED_BYTES)
    key = f"{FAILED}/{name}"
    if not store.exists(key):
        return key
    plain = PurePosixPath(name)
    return f"{FAILED}/{plain.stem}-{tag[:_TAG_CHARS]}{plain.suffix}"


def remove_image_files(store: Store, original: str | None, thumbnails: tuple[str, ...]) -> None:
    """The files of a record that is gone; those already gone are no error (a delete that
    crashed after its commit may be repeated, or the files were never made)."""
    for thumbnail in thumbnails:
        store.remove(thumbnail)
    if original is not None:
        store.remove(original)
        store.remove(note_key(original))


def stage_in_trash(store: FolderStore, original: str, name: str, trash_dir: Path) -> trash.Staged:
    """An original (and the note of why it failed) put in `trash_dir` as `name` under temporary
    names, before its record goes (models.trash)."""
    path = store.local_path(original)
    return trash.stage([(path, name), (store.local_path(note_key(original)), name + ERROR_NOTE_SUFFIX)], trash_dir)
