"""The objects of the store that no record points to, found and removed (`htx storage gc`).

What leaves them: a registration that put its object and then could not commit its row (a
crash, a lost watch), the incoming/ object of an image a worker has since stored under
originals/, the thumbnails of an image recorded as missing, a note whose failed copy went.

Two rules keep a sweep from taking what is still wanted, with the daemons running:

- The store is listed first and the records read after, so that an object put and committed
  while the listing runs is in the records read. An object whose row is not committed yet (a
  registration puts its object first, a worker writes thumbnails before it records them) is
  young: only what is older than `min_age_s` is an orphan. Ages are the store's clock against
  this machine's: keep `min_age_s` well above any skew between them.
- A file in failed/ without a record is kept: the daemon keeps there what it could not
  register (a too large file that may be a duplicate), for a person to look at. Only a note
  with no failed copy beside it goes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select

from models.store import ERROR_NOTE_SUFFIX, PARTS, Listed, Store, is_failed_copy, note_key
from models.tables import Image

images = Image.__table__

# A registration puts its object before it commits its row: younger objects are left alone.
DEFAULT_MIN_AGE_S = 3600.0


@dataclass(frozen=True)
class Sweep:
    """What a look through the store found: the orphans, and what it left and why."""

    orphans: list[Listed]
    # Unreferenced but younger than min_age_s: maybe a row not committed yet.
    young: int
    # Files in failed/ without a record, kept for a person (see the module's docstring).
    kept_failed: list[str]

    @property
    def orphan_bytes(self) -> int:
        return sum(orphan.size for orphan in self.orphans)


def listed_objects(store: Store) -> Iterator[Listed]:
    """Every object of the store, part by part."""
    for part in PARTS:
        yield from store.scan(f"{part}/")


def referenced_keys(connection: Connection) -> set[str]:
    """Every key a record points to: originals, failed copies and their notes, incoming
    objects, thumbnails."""
    referenced: set[str] = set()
    query = select(images.c.stored_path, images.c.thumb_small_path, images.c.thumb_medium_path)
    for stored, small, medium in connection.execute(query):
        referenced.update(key for key in (stored, small, medium) if key)
        if stored and is_failed_copy(stored):
            referenced.add(note_key(stored))
    return referenced


def sort_out(listed: Iterable[Listed], referenced: set[str], *, min_age_s: float, now: float) -> Sweep:
    """The orphans among `listed`, given the keys the records point to."""
    listed = list(listed)
    present = {each.key for each in listed}
    orphans: list[Listed] = []
    kept_failed: list[str] = []
    young = 0
    for each in listed:
        if each.key in referenced:
            continue
        if is_failed_copy(each.key) and not _note_of_nothing(each.key, present):
            kept_failed.append(each.key)
        elif now - each.modified < min_age_s:
            young += 1
        else:
            orphans.append(each)
    return Sweep(orphans, young, kept_failed)


def _note_of_nothing(key: str, present: set[str]) -> bool:
    """Whether `key` is a note in failed/ with no failed copy beside it."""
    return key.endswith(ERROR_NOTE_SUFFIX) and key[: -len(ERROR_NOTE_SUFFIX)] not in present


def find_orphans(store: Store, engine: Engine, *, min_age_s: float = DEFAULT_MIN_AGE_S, now: float | None = None) -> Sweep:
    """The store's orphans: listed first, the records read after (the module's docstring says why)."""
    listed = list(listed_objects(store))
    with engine.connect() as connection:
        referenced = referenced_keys(connection)
    return sort_out(listed, referenced, min_age_s=min_age_s, now=time.time() if now is None else now)


def remove_orphans(store: Store, engine: Engine, orphans: Iterable[Listed]) -> list[Listed]:
    """Remove the orphans found by `find_orphans`; those removed. The records are read once
    more first: one that has come to point at an orphan since (the same file registered
    again, whose object was already there) keeps it."""
    with engine.connect() as connection:
        referenced = referenced_keys(connection)
    removed = []
    for orphan in orphans:
        if orphan.key in referenced:
            continue
        store.remove(orphan.key)
        removed.append(orphan)
    return removed
