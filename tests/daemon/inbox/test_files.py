"""Bounded hashing of inbox files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from daemon.inbox.files import hash_file


def test_hash_file_hashes_the_whole_file_within_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 5000)
    digest = hash_file(path, 5000)
    assert (digest.sha256, digest.size_bytes, digest.over_limit) == (hashlib.sha256(b"x" * 5000).hexdigest(), 5000, False)


def test_hash_file_stops_reading_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as handle:
        handle.truncate(1 << 40)  # 1 TiB, sparse: reading it would take hours
    digest = hash_file(path, 1000)
    assert digest.over_limit and digest.size_bytes == 1 << 40
    # Same start, other size: not the same file.
    other = tmp_path / "other.jpg"
    with open(other, "wb") as handle:
        handle.truncate(1 << 39)
    assert hash_file(other, 1000).sha256 != digest.sha256
