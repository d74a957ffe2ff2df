"""models.store_copy: each object copied and read back by its sha256, what is there already
skipped (an original by its name alone), a damaged copy replaced, a store that gives back
other bytes or loses an object named; between data folders (one posing as remote), so that
the rules are tested without a server (tests/daemon/test_cli_storage.py does it on SeaweedFS)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from models.store import FolderStore, StoredObject, incoming_key, original_key, thumbnail_key
from models.store_copy import ALREADY_THERE, COPIED, MISMATCH, REPLACED, Copied, Outcome, copy_store, named_digest, sha256_of


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put(store: FolderStore, key: str, data: bytes) -> None:
    store.write(key, lambda handle: handle.write(data))


class _Remote(FolderStore):
    """A data folder that gives no local path, as a bucket does: its objects are fetched."""

    remote = True

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened: list[str] = []

    def local_path(self, key: str) -> None:  # type: ignore[override]
        return None

    def open(self, key: str) -> StoredObject:
        self.opened.append(key)
        return super().open(key)


class _Garbling(FolderStore):
    """A destination that keeps other bytes than it was given under one key."""

    def __init__(self, root: Path, garbled: str) -> None:
        super().__init__(root)
        self.garbled = garbled

    def upload(self, key: str, source: Path) -> None:
        if key == self.garbled:
            _put(self, key, b"garbled on the way")
            return
        super().upload(key, source)


@pytest.fixture
def source(tmp_path: Path) -> _Remote:
    store = _Remote(tmp_path / "source")
    for data in (b"one", b"two"):
        sha = _sha(data)
        _put(store, original_key(sha, "jpg"), data)
        _put(store, thumbnail_key(sha, "small", "webp"), data + b" small")
    _put(store, incoming_key(_sha(b"three")), b"three")
    _put(store, "failed/broken.jpg", b"broken")
    _put(store, "failed/broken.jpg.error.txt", b"why")
    return store


def test_the_digest_a_key_is_named_after() -> None:
    sha = _sha(b"one")
    assert named_digest(original_key(sha, "jpg")) == sha
    assert named_digest(incoming_key(sha)) == sha
    assert named_digest(thumbnail_key(sha, "small", "webp")) is None
    assert named_digest("failed/" + sha + ".jpg") is None
    assert named_digest("originals/ab/not-a-digest.jpg") is None


def test_every_object_is_copied_checked_and_a_second_copy_reads_no_original_of_the_source(source: _Remote, tmp_path: Path) -> None:
    destination = FolderStore(tmp_path / "destination")
    seen: list[tuple[int, str]] = []
    result = copy_store(source, destination, tmp_path / "work", progress=lambda totals, outcome: seen.append((totals.done, outcome.action)))
    assert (result.total, result.copied, result.already_there, result.replaced, result.mismatches) == (7, 7, 0, 0, [])
    assert result.bytes_copied == sum(len(data) for data in (b"one", b"two", b"one small", b"two small", b"three", b"broken", b"why"))
    assert seen == [(number, COPIED) for number in range(1, 8)]
    keys = [listed.key for part in ("originals/", "thumbnails/", "failed/", "incoming/") for listed in source.scan(part)]
    assert all(sha256_of(destination, key) == sha256_of(source, key) for key in keys)
    assert list((tmp_path / "work").iterdir()) == []  # the fetched copies are gone

    source.opened.clear()
    again = copy_store(source, destination, tmp_path / "work")
    assert (again.copied, again.already_there) == (0, 7)
    # An original or incoming object is vouched for by its name: only the others are read.
    assert sorted(source.opened) == sorted(key for key in keys if named_digest(key) is None)


def test_a_damaged_copy_in_the_destination_is_replaced_by_the_sources_bytes(source: _Remote, tmp_path: Path) -> None:
    destination = FolderStore(tmp_path / "destination")
    copy_store(source, destination, tmp_path / "work")
    original, thumbnail = original_key(_sha(b"one"), "jpg"), thumbnail_key(_sha(b"one"), "small", "webp")
    for key in (original, thumbnail):
        _put(destination, key, b"damaged")
    outcomes: list[Outcome] = []
    result = copy_store(source, destination, tmp_path / "work", progress=lambda totals, outcome: outcomes.append(outcome))
    assert sorted(outcome.key for outcome in outcomes if outcome.action == REPLACED) == sorted([original, thumbnail])
    assert (result.copied, result.replaced, result.already_there) == (2, 2, 5)
    assert sha256_of(destination, original) == _sha(b"one") and sha256_of(destination, thumbnail) == _sha(b"one small")


def test_a_copy_read_back_with_other_bytes_is_a_mismatch(source: _Remote, tmp_path: Path) -> None:
    thumbnail = thumbnail_key(_sha(b"two"), "small", "webp")
    result = copy_store(source, _Garbling(tmp_path / "destination", thumbnail), tmp_path / "work")
    assert [(outcome.key, outcome.action) for outcome in result.mismatches] == [(thumbnail, MISMATCH)]
    assert result.mismatches[0].problem == f"read back from the destination as sha256 {_sha(b'garbled on the way')}, copied as {_sha(b'two small')}"
    assert result.copied == 6


def test_an_original_not_holding_the_bytes_its_name_says_is_not_copied(source: _Remote, tmp_path: Path) -> None:
    rotten = original_key(_sha(b"as it came"), "png")
    _put(source, rotten, b"rotted")
    destination = FolderStore(tmp_path / "destination")
    result = copy_store(source, destination, tmp_path / "work")
    assert [outcome.key for outcome in result.mismatches] == [rotten] and not destination.exists(rotten)
    assert "the source holds other bytes than its name says" in (result.mismatches[0].problem or "")


def test_an_object_gone_from_the_source_after_the_listing_is_named(source: _Remote, tmp_path: Path) -> None:
    gone = "failed/broken.jpg"

    class Losing(_Remote):
        def open(self, key: str) -> StoredObject:
            if key == gone:
                raise FileNotFoundError(key)
            return super().open(key)

    losing = Losing(source.root)
    result = copy_store(losing, FolderStore(tmp_path / "destination"), tmp_path / "work")
    assert [(outcome.key, outcome.problem) for outcome in result.mismatches] == [(gone, "gone from the source since it was listed (is a daemon running?)")]


def test_the_totals_count_each_outcome_once() -> None:
    totals = Copied(total=4)
    for outcome in (Outcome("a", COPIED, 5), Outcome("b", REPLACED, 7), Outcome("c", ALREADY_THERE), Outcome("d", MISMATCH, problem="x")):
        totals.add(outcome)
    assert (totals.done, totals.copied, totals.replaced, totals.already_there, totals.bytes_copied) == (4, 2, 1, 1, 12)
