"""Every object of one store put into another under the same key (`htx storage copy`), so that
an install moves between the data folder and a bucket without a record changing: the keys are
the same in both.

Each object is streamed (a bucket's through a temporary file, never whole in memory), then
read back from the destination and checked by its sha256; an original's or an incoming
object's must also be the one its key is named after. An object the destination holds already
with the same bytes is skipped, so a copy run again, or after an interruption, costs little
more than a read of each object and changes nothing; one it holds with other bytes (a damaged
or older copy) is replaced by the source's.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from models.files import CHUNK_BYTES
from models.store import INCOMING, ORIGINALS, Listed, Store, fetch
from models.store_sweep import listed_objects

# Objects copied at once: a bucket's requests wait on the network, far longer than on this
# machine's disk or processor.
WORKERS = 8
# Objects handed to the workers at a time, so that a store of millions is never all queued.
_BATCH = 256

COPIED = "copied"
REPLACED = "replaced"
ALREADY_THERE = "already there"
MISMATCH = "mismatch"


@dataclass(frozen=True)
class Outcome:
    """What became of one object: `problem` says why, for a mismatch."""

    key: str
    action: str
    size: int = 0
    problem: str | None = None


@dataclass
class Copied:
    """The totals of a copy, kept as the outcomes come in."""

    total: int
    copied: int = 0
    replaced: int = 0  # also counted in `copied`: the destination held other bytes under the key
    already_there: int = 0
    bytes_copied: int = 0
    mismatches: list[Outcome] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.copied + self.already_there + len(self.mismatches)

    def add(self, outcome: Outcome) -> None:
        if outcome.action == MISMATCH:
            self.mismatches.append(outcome)
        elif outcome.action == ALREADY_THERE:
            self.already_there += 1
        else:
            self.copied += 1
            self.replaced += outcome.action == REPLACED
            self.bytes_copied += outcome.size


def named_digest(key: str) -> str | None:
    """The sha256 a key is named after: an original's (originals/<ab>/<sha256>.<ext>) and an
    incoming object's (incoming/<ab>/<sha256>) are their content; None for any other key."""
    part, name = key.split("/", 1)[0], PurePosixPath(key).name
    if part == ORIGINALS:
        name = name.split(".", 1)[0]
    elif part != INCOMING:
        return None
    return name if len(name) == 64 and all(char in "0123456789abcdef" for char in name) else None


def sha256_of(store: Store, key: str) -> str | None:
    """The sha256 of the object under `key`, read through; None when there is none."""
    digest = hashlib.sha256()
    try:
        with store.open(key) as stored:
            while chunk := stored.reader.read(CHUNK_BYTES):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as reader:
        while chunk := reader.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def copy_object(source: Store, destination: Store, listed: Listed, scratch: Path) -> Outcome:
    """One object copied and checked; `scratch` is a folder for what must be fetched first.
    OSError: a store failed (the copy stops: run it again once the store answers)."""
    key = listed.key
    named = named_digest(key)
    there = sha256_of(destination, key)
    if named is not None and there == named:
        return Outcome(key, ALREADY_THERE)  # its name vouches for its bytes: the source need not be read
    fetched: Path | None = None
    try:
        path = source.local_path(key)
        if path is None:
            fetched = scratch / hashlib.sha256(key.encode()).hexdigest()
            digest = fetch(source, key, fetched)
            path = fetched
        else:
            digest = _file_sha256(path)
        if named is not None and digest != named:
            return Outcome(key, MISMATCH, problem=f"the source holds other bytes than its name says (sha256 {digest})")
        if there == digest:
            return Outcome(key, ALREADY_THERE)
        if there is not None:
            destination.remove(key)  # an upload keeps what a key holds already
        destination.upload(key, path)
    except FileNotFoundError:
        return Outcome(key, MISMATCH, problem="gone from the source since it was listed (is a daemon running?)")
    finally:
        if fetched is not None:
            fetched.unlink(missing_ok=True)
    copied = sha256_of(destination, key)
    if copied != digest:
        return Outcome(key, MISMATCH, problem=f"read back from the destination as sha256 {copied}, copied as {digest}")
    return Outcome(key, REPLACED if there is not None else COPIED, listed.size)


def copy_store(
    source: Store,
    destination: Store,
    work_dir: Path,
    *,
    progress: Callable[[Copied, Outcome], None] | None = None,
    workers: int = WORKERS,
) -> Copied:
    """Every object of `source` copied into `destination` (see the module's docstring);
    `progress` is called after each object, with the totals so far. Fetched objects are put in
    a temporary folder of `work_dir` (removed after)."""
    listed = list(listed_objects(source))  # first: the total is known for the progress
    result = Copied(total=len(listed))
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".storage-copy-") as scratch:
        pool = ThreadPoolExecutor(workers)
        try:
            for batch in _batches(listed):
                for outcome in pool.map(lambda each: copy_object(source, destination, each, Path(scratch)), batch):
                    result.add(outcome)
                    if progress is not None:
                        progress(result, outcome)
        finally:
            # A fault or Ctrl-C: the objects in hand are finished, the rest of the batch dropped.
            pool.shutdown(wait=True, cancel_futures=True)
    return result


def _batches(listed: list[Listed]) -> Iterator[list[Listed]]:
    for start in range(0, len(listed), _BATCH):
        yield listed[start : start + _BATCH]
