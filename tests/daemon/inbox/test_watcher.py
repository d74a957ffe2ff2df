"""Completion rules, with a real watchdog observer on a temp inbox and the real daemon behind it."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from daemon.inbox.watcher import choose_mode
from models.config import Config
from tests.helpers import CORPUS_DIR, copy_in, finished, read_images, rename_in, wait_for

MODES = ["inotify", "polling"]


def distinct_jpeg(number: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small JPEG whose bytes differ from every other number's."""
    image = Image.new("RGB", size, ((number * 37) % 256, (number * 91) % 256, (number * 13) % 256))
    image.putpixel((number % size[0], (number // size[0]) % size[1]), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, comment=f"image {number}".encode())
    return buffer.getvalue()


def _all_finished(config: Config, count: int):
    return lambda: (rows := read_images(config)) and len(finished(rows)) == count and rows


@pytest.fixture(params=MODES)
def mode_config(request, make_config) -> Config:
    return make_config(watch={"mode": request.param, "settle_ms": 300})


def test_file_written_slowly_in_place_is_taken_once_complete(mode_config: Config, start_daemon) -> None:
    start_daemon(mode_config)
    payload = (CORPUS_DIR / "xmp_test.jpg").read_bytes()
    target = mode_config.inbox_dir / "slow.jpg"
    chunks = [payload[start : start + 200_000] for start in range(0, len(payload), 200_000)]
    with open(target, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
            handle.flush()
            # Pauses shorter than settle_ms: polling must see the file still changing.
            time.sleep(0.15)
            assert read_images(mode_config) == [], "taken before it was complete"
    rows = wait_for(_all_finished(mode_config, 1), what="the slow file")
    assert len(rows) == 1
    assert rows[0]["status"] == "done"
    assert rows[0]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert rows[0]["size_bytes"] == len(payload)


def test_inotify_waits_for_close_even_after_a_long_pause(make_config, start_daemon) -> None:
    config = make_config(watch={"mode": "inotify", "settle_ms": 100})
    start_daemon(config)
    payload = (CORPUS_DIR / "flower.jpg").read_bytes()
    with open(config.inbox_dir / "paused.jpg", "wb") as handle:
        handle.write(payload[:1000])
        handle.flush()
        # A bounded look for something that must not happen: nothing may be registered
        # while the writer holds the file open, however long it is quiet.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert read_images(config) == []
            time.sleep(0.05)
        handle.write(payload[1000:])
    rows = wait_for(_all_finished(config, 1), what="the paused file")
    assert rows[0]["status"] == "done" and rows[0]["sha256"] == hashlib.sha256(payload).hexdigest()


def test_file_renamed_in_is_taken(mode_config: Config, start_daemon) -> None:
    start_daemon(mode_config)
    rename_in(CORPUS_DIR / "hopper.jpg", mode_config.inbox_dir / "moved.jpg", mode_config.data_dir / "elsewhere")
    rows = wait_for(_all_finished(mode_config, 1), what="the renamed file")
    assert (rows[0]["filename"], rows[0]["status"]) == ("moved.jpg", "done")


def test_rsync_style_temp_file_then_rename(mode_config: Config, start_daemon) -> None:
    start_daemon(mode_config)
    temporary = mode_config.inbox_dir / ".photo.jpg.Xa81bQ"
    copy_in(CORPUS_DIR / "flower.jpg", temporary)
    temporary.rename(mode_config.inbox_dir / "photo.jpg")
    rows = wait_for(_all_finished(mode_config, 1), what="the rsync file")
    assert [(row["filename"], row["status"]) for row in rows] == [("photo.jpg", "done")]


def test_two_hundred_files_at_once(mode_config: Config, start_daemon) -> None:
    daemon = start_daemon(mode_config)
    for number in range(200):
        (mode_config.inbox_dir / f"burst-{number:03}.jpg").write_bytes(distinct_jpeg(number))
    rows = wait_for(_all_finished(mode_config, 200), timeout=60, what="200 files")
    assert {row["status"] for row in rows} == {"done"}
    assert len({row["sha256"] for row in rows}) == 200
    assert daemon.wait_idle(timeout=10)
    assert list(mode_config.inbox_dir.iterdir()) == []


def test_nested_folders_are_watched(mode_config: Config, start_daemon) -> None:
    start_daemon(mode_config)
    copy_in(CORPUS_DIR / "hopper.png", mode_config.inbox_dir / "2024" / "trip" / "a.png")
    # A whole tree moved in at once (its files never get their own events).
    staging = mode_config.data_dir / "staging"
    copy_in(CORPUS_DIR / "hopper.jpg", staging / "album" / "deep" / "b.jpg")
    staging.joinpath("album").rename(mode_config.inbox_dir / "album")
    rows = wait_for(_all_finished(mode_config, 2), what="nested files")
    assert sorted(row["filename"] for row in rows) == ["2024/trip/a.png", "album/deep/b.jpg"]


def test_ignored_names_never_become_records(mode_config: Config, start_daemon) -> None:
    daemon = start_daemon(mode_config)
    source = CORPUS_DIR / "hopper.jpg"
    for name in (
        ".hidden.jpg",
        "photo.jpg.part",
        "photo.tmp",
        "photo.jpg.crdownload",
        "~lock.jpg",
        ".syncthing.photo.jpg.tmp",
        "Thumbs.db",
        "@eaDir/photo.jpg",
        ".git/photo.jpg",
    ):
        copy_in(source, mode_config.inbox_dir / name)
    copy_in(CORPUS_DIR / "flower.jpg", mode_config.inbox_dir / "real.jpg")  # the control
    rows = wait_for(_all_finished(mode_config, 1), what="the control file")
    daemon.watcher.scan()  # a rescan must not pick them up either
    assert daemon.wait_idle(timeout=10)
    assert [row["filename"] for row in read_images(mode_config)] == ["real.jpg"]
    assert (mode_config.inbox_dir / "photo.jpg.part").exists()
    assert rows[0]["status"] == "done"


def test_files_present_at_start_are_taken_by_the_startup_scan(mode_config: Config, start_daemon) -> None:
    copy_in(CORPUS_DIR / "hopper.jpg", mode_config.inbox_dir / "early.jpg")
    old = time.time() - 60
    os.utime(mode_config.inbox_dir / "early.jpg", (old, old))
    start_daemon(mode_config)
    rows = wait_for(_all_finished(mode_config, 1), what="the file that was there first")
    assert rows[0]["filename"] == "early.jpg"


def test_periodic_rescan_catches_what_events_missed(make_config, start_daemon) -> None:
    config = make_config(watch={"mode": "inotify", "settle_ms": 100, "rescan_s": 1})
    daemon = start_daemon(config, observe=False)  # no events at all: only scans find files
    copy_in(CORPUS_DIR / "hopper.jpg", config.inbox_dir / "missed.jpg")
    stop = threading.Event()
    runner = threading.Thread(target=daemon.run, args=(stop,))
    runner.start()
    try:
        rows = wait_for(_all_finished(config, 1), what="the rescan")
    finally:
        stop.set()
        runner.join()
    assert rows[0]["filename"] == "missed.jpg"


def test_auto_mode_polls_network_filesystems(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("daemon.inbox.watcher.filesystem_type", lambda path: "cifs")
    assert choose_mode(tmp_path, "auto") == "polling"
    monkeypatch.setattr("daemon.inbox.watcher.filesystem_type", lambda path: "ext4")
    assert choose_mode(tmp_path, "auto") == "inotify"
    assert choose_mode(tmp_path, "polling") == "polling"
