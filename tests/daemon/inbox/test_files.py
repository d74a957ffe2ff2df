"""Opening inbox files safely, bounded hashing, names in failed/, stale temporaries."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

from daemon.errors import NotRegularFile
from daemon.inbox.files import free_name, hash_file, open_regular, remove_stale_temporaries
from models.names import error_note


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside.jpg"
    target.write_bytes(b"\xff\xd8\xff secret")
    return target


def test_open_regular_reads_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"bytes")
    with open_regular(path) as handle:
        assert handle.read() == b"bytes"


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda path, outside: path.symlink_to(outside), "symbolic link"),
        (lambda path, outside: path.symlink_to("/dev/zero"), "symbolic link"),
        (lambda path, outside: os.mkfifo(path), "FIFO"),
        (lambda path, outside: path.mkdir(), "folder"),
    ],
)
def test_open_regular_refuses_anything_else_without_blocking(tmp_path: Path, outside: Path, make, what: str) -> None:
    path = tmp_path / "x.jpg"
    make(path, outside)
    with pytest.raises(NotRegularFile) as refused:
        open_regular(path)  # a FIFO with no writer would block a plain open() forever
    assert refused.value.what == what


def test_open_regular_refuses_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "s.jpg"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        with pytest.raises((NotRegularFile, OSError)):  # Linux refuses to open a socket at all
            open_regular(path)


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


def test_free_names_and_their_notes_fit_the_filesystem(tmp_path: Path) -> None:
    name = "n" * 251 + ".jpg"
    first = free_name(tmp_path, name, "a" * 64)
    first.write_bytes(b"")
    error_note(first).write_text("why")  # would be ENAMETOOLONG unshortened
    second = free_name(tmp_path, name, "b" * 64)
    assert second != first and second.suffix == ".jpg" and "-bbbbbbbbbbbb" in second.name
    second.write_bytes(b"")
    error_note(second).write_text("why")


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / "ab").mkdir()
    stale = tmp_path / "ab" / ".x-small.jpg.123.tmp"
    stale.write_bytes(b"")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    being_written = tmp_path / "ab" / ".y-small.jpg.456.tmp"  # another daemon's, right now
    being_written.write_bytes(b"")
    kept = tmp_path / "ab" / "x-small.jpg"
    kept.write_bytes(b"")
    assert remove_stale_temporaries([tmp_path]) == 1
    assert not stale.exists() and being_written.exists() and kept.exists()
