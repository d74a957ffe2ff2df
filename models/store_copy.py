"""`htx storage copy`: every object of one store put into another under the same key, each
checked by its sha256 (read back from the destination), so an install moves between the data
folder and a bucket without a record changing: the keys are the same in both.

Safe to run again: an object the destination already holds with the same bytes is skipped.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from models.files import CHUNK_BYTES
from models.store import ORIGINALS, Listed, Store, fetch
from models.store_sweep import listed_objects


@dataclass
class Copied:
    copied: int = 0
    already_there: int = 0
    bytes_copied: int = 0
    mismatched: list[str] = field(default_factory=list)  # keys whose copy does not hold the source's bytes


def sha256_of(store: Store, key: str) -> str | None:
    """The digest of the object under `key`, or None when there is none."""
    digest = hashlib.sha256()
    try:
        with store.open(key) as stored:
            while chunk := stored.reader.read(CHUNK_BYTES):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def _named_digest(key: str) -> str | None:
    """An original's key is its sha256 (originals/<ab>/<sha256>.<ext>)."""
    if not key.startswith(f"{ORIGINALS}/"):
        return None
    return PurePosixPath(key).name.split(".", 1)[0]


def copy_store(source: Store, destination: Store, work_dir: Path, progress: Callable[[int, Copied], None] = lambda n, c: None) -> Copied:
    result = Copied()
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="copy-") as scratch:
        for number, listed in enumerate(listed_objects(source), 1):
            _copy_one(source, destination, listed, Path(scratch) / "object", result)
            progress(number, result)
    return result


def _copy_one(source: Store, destination: Store, listed: Listed, scratch: Path, result: Copied) -> None:
    key = listed.key
    fetched = fetch(source, key, scratch)  # the source's bytes, and their digest
    expected = _named_digest(key)
    if expected is not None and fetched != expected:
        scratch.unlink(missing_ok=True)
        result.mismatched.append(f"{key} (the source's bytes are not the ones its name says)")
        return
    if sha256_of(destination, key) == fetched:
        scratch.unlink(missing_ok=True)
        result.already_there += 1
        return
    destination.remove(key)  # other bytes under this key: replaced (a put keeps what is there)
    destination.put_file(key, scratch)
    if sha256_of(destination, key) != fetched:
        result.mismatched.append(f"{key} (read back with other bytes than were copied)")
        return
    result.copied += 1
    result.bytes_copied += listed.size
