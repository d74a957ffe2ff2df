"""Opening files safely, and the temporaries a kill leaves."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from models.files import NotRegularFile, open_regular, remove_stale_temporaries


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
