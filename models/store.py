"""Where an image's files live: the one module that knows it.

An image's files are objects under keys, the same strings as the database keeps in
`stored_path` and `thumb_*_path` and as the data folder's layout has always been:

    originals/<ab>/<sha256>.<ext>          the original, keyed by its content
    thumbnails/<ab>/<sha256>-<size>.<ext>  its thumbnails (size: small, medium)
    failed/<name>                          a file that failed, under the name it came with
    failed/<name>.error.txt                beside it: why it failed
    incoming/<ab>/<sha256>                 a file registered on one machine, for a worker on
                                           any machine to fetch (an object store only)

A `Store` keeps objects under keys with the few operations an object store has too (put a
file or written bytes under a key, open with size and version, remove, list by prefix), so
that the daemon, the commands and the API need nothing else, and a store that is not a
folder can stand in. `FolderStore` is the data folder; models.s3_store keeps them in a bucket. The helpers below it (the thumbnails
of an image, a free name in failed/, the files a delete leaves) are written against `Store`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from models import trash
from models.files import CHUNK_BYTES, folder_problem, process_alive, move_file, remove_stale_temporaries, write_atomically
from models.names import MAX_NAME_BYTES, fit_name

ORIGINALS = "originals"
THUMBNAILS = "thumbnails"
FAILED = "failed"
INCOMING = "incoming"
FOLDERS = (ORIGINALS, THUMBNAILS, FAILED)
# Every part of the store, as `htx storage gc` and `copy` go through it.
PARTS = (*FOLDERS, INCOMING)
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


def incoming_key(sha256: str) -> str:
    return f"{INCOMING}/{sha256[:2]}/{sha256}"


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


@dataclass(frozen=True)
class Listed:
    """A key found by `Store.scan`, with its size and when it was last written (Unix time)."""

    key: str
    size: int
    modified: float


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

    # True when the objects are not files of this machine, so that another machine with no
    # shared folder works on them: what is registered goes into the store at once.
    remote: bool

    def prepare(self) -> int:
        """Make the store ready to write; how many leftovers of a killed writer it removed."""

    def check(self) -> None:
        """StoreProblem if the store cannot be written now."""

    def put_file(self, key: str, source: Path) -> None:
        """Move the file `source` in under `key` (it is gone from where it was after). A key
        already there keeps its bytes: keys of originals are their content, so a put repeated
        after a crash changes nothing."""

    def upload(self, key: str, source: Path) -> None:
        """A copy of the file `source` under `key` (the file stays); a key already there
        keeps its bytes, as for `put_file`."""

    def write(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        """Write an object through `write`, under `key` only once it is complete."""

    def copy(self, source_key: str, key: str) -> None:
        """The object under `source_key`, copied within the store to `key`."""

    def open(self, key: str) -> StoredObject:
        """The object to read, with its size and version."""

    def exists(self, key: str) -> bool: ...

    def remove(self, key: str) -> None:
        """Remove the object, if it is there."""

    def list(self, prefix: str) -> Iterator[str]:
        """The keys that start with `prefix` (whose last part is the start of a name)."""

    def scan(self, prefix: str) -> Iterator[Listed]:
        """Every key under the folder `prefix` ("originals/"), at any depth."""

    def local_path(self, key: str) -> Path | None:
        """The object as a file on this machine, for what needs a file (a decoder, sendfile);
        None when the store keeps it elsewhere."""


class FolderStore:
    """The data folder: each key a file under `root` (its "/" the folder separator)."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or parts[0] not in PARTS or ".." in parts:
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

    def upload(self, key: str, source: Path) -> None:
        destination = self._path(key)
        if source == destination or os.path.lexists(destination):
            return
        with open(source, "rb") as reader:
            write_atomically(destination, lambda writer: shutil.copyfileobj(reader, writer, CHUNK_BYTES))

    def write(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        write_atomically(self._path(key), write)

    def copy(self, source_key: str, key: str) -> None:
        with open(self._path(source_key), "rb") as reader:
            write_atomically(self._path(key), lambda writer: shutil.copyfileobj(reader, writer, CHUNK_BYTES))

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

    def scan(self, prefix: str) -> Iterator[Listed]:
        top = self._path(prefix.rstrip("/"))
        for folder, _subfolders, names in os.walk(top):
            for name in names:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue  # a write in progress, or a kill's leftover (prepare removes those)
                path = os.path.join(folder, name)
                try:
                    status = os.lstat(path)
                except FileNotFoundError:
                    continue
                yield Listed(Path(path).relative_to(self.root).as_posix(), status.st_size, status.st_mtime)

    def local_path(self, key: str) -> Path:
        return self._path(key)


def fetch(store: Store, key: str, destination: Path) -> str:
    """The object under `key` written to the local file `destination` (complete, or not at
    all); the sha256 of its bytes."""
    digest = hashlib.sha256()

    def copy(writer: BinaryIO) -> None:
        with store.open(key) as stored:
            while chunk := stored.reader.read(CHUNK_BYTES):
                digest.update(chunk)
                writer.write(chunk)

    write_atomically(destination, copy)
    return digest.hexdigest()


def fetched_path(work_dir: Path, image_id: int) -> Path:
    """Where this process fetches an image's object to, while it works on it."""
    return work_dir / f"{os.getpid()}-{image_id}"


def remove_left_fetches(work_dir: Path) -> int:
    """Fetched copies that processes which are no longer running left behind; how many."""
    removed = 0
    for path in work_dir.glob("*-*"):
        # A fetch cut short is its atomic write's hidden temporary: ".<pid>-<id>.<pid>.tmp".
        pid = path.name.removeprefix(".").split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


@contextmanager
def local_copy(store: Store, key: str, work_dir: Path) -> Iterator[Path]:
    """The object as a file of this machine for as long as it is needed: the file itself in a
    folder store, else a copy fetched into `work_dir` and removed after."""
    path = store.local_path(key)
    if path is not None:
        yield path
        return
    fetched = work_dir / f"{os.getpid()}-{hashlib.sha256(key.encode()).hexdigest()[:16]}-{threading.get_ident():x}"
    try:
        fetch(store, key, fetched)
        yield fetched
    finally:
        fetched.unlink(missing_ok=True)


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


def stage_in_trash(store: Store, original: str, name: str, trash_dir: Path) -> trash.Staged:
    """An original (and the note of why it failed) put in `trash_dir` as `name` under temporary
    names, before its record goes (models.trash); from an object store, fetched there."""
    files = [(original, name), (note_key(original), name + ERROR_NOTE_SUFFIX)]
    if not store.remote:
        return trash.stage([(store.local_path(key), as_name) for key, as_name in files], trash_dir)  # type: ignore[misc]
    return trash.stage_fetched([(lambda to, key=key: fetch(store, key, to), as_name) for key, as_name in files], trash_dir)
