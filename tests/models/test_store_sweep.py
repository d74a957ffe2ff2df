"""models.store_sweep: which objects are orphans, that the store is listed before the records
are read, and that a removal spares what a record has come to name since."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from models import migrate
from models.db import make_engine
from models.store import FolderStore, Listed, incoming_key, note_key, original_key, thumbnail_key
from models.store_sweep import find_orphans, referenced_keys, remove_orphans, sort_out
from models.tables import Image

images = Image.__table__
SHA = "ab" + "c" * 62
OTHER = "cd" + "e" * 62
NOW = 1_000_000.0


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'htx.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def _record(engine: Engine, sha256: str, **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(insert(images).values(sha256=sha256, filename="a.jpg", received_at=datetime(2026, 1, 1), size_bytes=1, **values))


def _listed(*keys: str, age_s: float = 2 * 3600) -> list[Listed]:
    return [Listed(key, 10, NOW - age_s) for key in keys]


def test_the_keys_records_name_are_originals_thumbnails_failed_copies_with_their_notes_and_incoming_objects(engine: Engine) -> None:
    _record(engine, SHA, status="done", stored_path=original_key(SHA, "jpg"), thumb_small_path=thumbnail_key(SHA, "small", "webp"),
            thumb_medium_path=thumbnail_key(SHA, "medium", "webp"))
    _record(engine, OTHER, status="failed", stored_path="failed/broken.jpg")
    _record(engine, "1" * 64, status="pending", stored_path=incoming_key("1" * 64))
    _record(engine, "2" * 64, status="pending", inbox_path="still/in/the/inbox.jpg")  # names no object
    with engine.connect() as connection:
        assert referenced_keys(connection) == {
            original_key(SHA, "jpg"), thumbnail_key(SHA, "small", "webp"), thumbnail_key(SHA, "medium", "webp"),
            "failed/broken.jpg", note_key("failed/broken.jpg"), incoming_key("1" * 64),
        }


def test_an_orphan_is_old_and_named_by_no_record_and_an_unrecorded_failed_file_is_kept() -> None:
    named = original_key(SHA, "jpg")
    old = _listed(named, original_key(OTHER, "png"), thumbnail_key(OTHER, "small", "webp"), incoming_key(OTHER),
                  "failed/kept.jpg", note_key("failed/kept.jpg"), note_key("failed/gone.jpg"))
    young = _listed(thumbnail_key(OTHER, "medium", "webp"), note_key("failed/young.jpg"), age_s=60)
    sweep = sort_out(old + young, {named}, min_age_s=3600, now=NOW)
    assert [orphan.key for orphan in sweep.orphans] == [original_key(OTHER, "png"), thumbnail_key(OTHER, "small", "webp"), incoming_key(OTHER),
                                                        note_key("failed/gone.jpg")]
    assert sweep.young == 2 and sweep.orphan_bytes == 40
    assert sweep.kept_failed == ["failed/kept.jpg", note_key("failed/kept.jpg")]
    assert len(sort_out(old + young, {named}, min_age_s=0, now=NOW).orphans) == 6


class _CommitsWhileListed(FolderStore):
    """A store during whose listing a registration commits a row naming an object already
    listed (the same bytes dropped again: its object was there, old)."""

    def __init__(self, root: Path, engine: Engine) -> None:
        super().__init__(root)
        self.engine = engine

    def scan(self, prefix: str) -> Iterator[Listed]:
        yield from super().scan(prefix)
        if prefix == "originals/":
            _record(self.engine, SHA, status="pending", stored_path=original_key(SHA, "jpg"))


def test_an_object_committed_while_the_store_is_listed_is_no_orphan(engine: Engine, tmp_path: Path) -> None:
    store = _CommitsWhileListed(tmp_path / "data", engine)
    for key in (original_key(SHA, "jpg"), original_key(OTHER, "jpg")):
        store.write(key, lambda handle: handle.write(b"bytes"))
    sweep = find_orphans(store, engine, min_age_s=0)
    assert [orphan.key for orphan in sweep.orphans] == [original_key(OTHER, "jpg")]


def test_a_removal_spares_an_orphan_a_record_has_come_to_name_since_it_was_found(engine: Engine, tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "data")
    keys = [original_key(SHA, "jpg"), original_key(OTHER, "jpg"), thumbnail_key(OTHER, "small", "webp")]
    for key in keys:
        store.write(key, lambda handle: handle.write(b"bytes"))
    sweep = find_orphans(store, engine, min_age_s=0)
    assert sorted(orphan.key for orphan in sweep.orphans) == sorted(keys)
    _record(engine, SHA, status="pending", stored_path=original_key(SHA, "jpg"))
    removed = remove_orphans(store, engine, sweep.orphans)
    assert sorted(orphan.key for orphan in removed) == sorted(keys[1:])
    assert store.exists(keys[0]) and not store.exists(keys[1]) and not store.exists(keys[2])
