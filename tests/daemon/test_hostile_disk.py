"""A real `htx daemon` and `htx api` while the data disk fills up or a data folder is broken:
images wait (never failed for it), the daemon backs off quietly, /healthz and /api/stats say
what is wrong, and everything resumes by itself once the cause is gone."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models import config as config_module
from models.config import Config
from tests.api.live import Htx, free_port
from tests.helpers import copy_in, fill, mounted_tmpfs, read_images, wait_for, write_toml

PHOTOS = 4


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", "16m") as mount_point:
        yield mount_point


def _config(folder: Path, data_dir: Path, inbox: Path) -> tuple[Path, Config]:
    config_file = write_toml(
        folder / "htx.toml",
        {
            "paths": {"data_dir": str(data_dir), "inbox": str(inbox)},
            "watch": {"settle_ms": 200, "rescan_s": 0},
            "pipeline": {"workers": 2},
            "caption": {"model": "none"},
            "api": {"port": free_port()},
        },
    )
    return config_file, config_module.load(config_file)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health(api: Htx) -> tuple[int, dict]:
    response = httpx.get(f"{api.base_url}/healthz", timeout=5)
    return response.status_code, response.json()


def _saying(api: Htx, problem: str | None) -> bool:
    try:
        status, body = health(api)
    except httpx.HTTPError:
        return False
    return body.get("problem") == problem and (status == 503) == (problem is not None)


def _done(config: Config, count: int) -> bool:
    rows = read_images(config)
    return len(rows) == count and all(row["status"] == "done" for row in rows)


def test_a_full_data_disk_is_waited_out_and_no_image_fails_for_it(
    small_disk: Path, tmp_path: Path, photo_files: list[Path]
) -> None:
    inbox = tmp_path / "inbox"  # on another disk, as a Samba share or an rsync target may be
    config_file, config = _config(tmp_path, small_disk / "data", inbox)
    daemon = Htx(config_file, "daemon")
    api = Htx(config_file, "api")
    try:
        api.wait_healthy()
        filler = fill(small_disk)
        for photo in photo_files[:PHOTOS]:
            copy_in(photo, inbox / photo.name)

        wait_for(lambda: "data disk full" in daemon.log(), what="the daemon to say the disk is full")
        wait_for(lambda: _saying(api, "data disk full"), what="/healthz to say the disk is full")
        stats = httpx.get(f"{api.base_url}/api/stats", timeout=5).json()
        assert stats["problem"] == "data disk full"
        # Backing off, not spinning: a second of CPU time over three is a busy loop.
        before = cpu_seconds(daemon.process.pid)
        time.sleep(3)  # a measuring window, not a wait for anything
        assert cpu_seconds(daemon.process.pid) - before < 0.5
        rows = read_images(config)
        assert {row["status"] for row in rows} <= {"pending", "processing"}
        log = daemon.log()
        assert log.count("images wait in the queue") == 1, log
        assert "Traceback" not in log

        filler.unlink()
        wait_for(lambda: _done(config, PHOTOS), timeout=60, what="every image to be done once there is room")
        wait_for(lambda: _saying(api, None), what="/healthz to be ok again")
        assert "data disk full: resolved after" in daemon.log()
        assert os.listdir(inbox) == []
        assert not [path for path in (config.data_dir / "thumbnails").rglob("*.tmp")]
        assert daemon.stop() == 0
    finally:
        daemon.stop()
        api.stop()


def test_a_disk_full_at_start_is_waited_out_and_a_stop_is_still_prompt(
    small_disk: Path, tmp_path: Path, photo_files: list[Path]
) -> None:
    inbox = tmp_path / "inbox"
    config_file, config = _config(tmp_path, small_disk / "data", inbox)
    first = Htx(config_file, "daemon")
    wait_for(lambda: "watching" in first.log(), what="a first start")
    assert first.stop() == 0
    filler = fill(small_disk)

    stopped_early = Htx(config_file, "daemon")
    wait_for(lambda: "data disk full" in stopped_early.log(), what="the daemon to say the disk is full")
    asked = time.monotonic()
    assert stopped_early.stop() == 0
    assert time.monotonic() - asked < 5

    copy_in(photo_files[0], inbox / "first.jpg")
    earlier = len(first.log())  # the runs share one log file
    daemon = Htx(config_file, "daemon")
    try:
        wait_for(lambda: "data disk full" in daemon.log()[earlier:], what="the daemon to say the disk is full")
        time.sleep(2)  # a window for a crash loop to show; the daemon must still be there after it
        assert daemon.process.poll() is None, daemon.log()
        assert daemon.log()[earlier:].count("images wait in the queue") == 1
        filler.unlink()
        wait_for(lambda: _done(config, 1), timeout=60, what="the image once there is room")
        assert "Traceback" not in daemon.log()
    finally:
        assert daemon.stop() == 0


def test_thumbnails_replaced_by_a_file_holds_images_back_until_it_is_a_folder_again(
    tmp_path: Path, photo_files: list[Path]
) -> None:
    config_file, config = _config(tmp_path, tmp_path / "data", tmp_path / "data" / "inbox")
    daemon = Htx(config_file, "daemon")
    api = Htx(config_file, "api")
    try:
        api.wait_healthy()
        shutil.rmtree((config.data_dir / "thumbnails"))
        (config.data_dir / "thumbnails").write_text("not a folder")
        copy_in(photo_files[0], config.inbox_dir / "a.jpg")
        problem = "a folder of the data folder is not a folder"
        wait_for(lambda: _saying(api, problem), what="/healthz to name the problem")
        assert [row["status"] for row in read_images(config)] in ([], ["pending"], ["processing"])
        (config.data_dir / "thumbnails").unlink()
        wait_for(lambda: _done(config, 1), timeout=60, what="the image once thumbnails/ can be made")
        wait_for(lambda: _saying(api, None), what="/healthz to be ok again")
        assert not list((config.data_dir / "failed").iterdir())
    finally:
        daemon.stop()
        api.stop()


def test_temporaries_a_kill_left_are_removed_at_start(tmp_path: Path) -> None:
    config_file, config = _config(tmp_path, tmp_path / "data", tmp_path / "data" / "inbox")
    left = (config.data_dir / "thumbnails") / "ab" / f".ab12-small.jpg.{os.getpid()}.tmp"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"half a thumbnail")
    os.utime(left, (time.time() - 3600, time.time() - 3600))  # the kill was a while ago
    kept = (config.data_dir / "thumbnails") / "ab" / "ab12-small.jpg"
    kept.write_bytes(b"a thumbnail")
    daemon = Htx(config_file, "daemon")
    try:
        wait_for(lambda: "watching" in daemon.log(), what="the daemon to start")
        assert not left.exists() and kept.exists()
        assert "removed 1 unfinished temporary file(s)" in daemon.log()
    finally:
        daemon.stop()


def test_a_stopped_daemon_shows_as_stopped_at_once(tmp_path: Path) -> None:
    config_file, _config_ = _config(tmp_path, tmp_path / "data", tmp_path / "data" / "inbox")
    daemon = Htx(config_file, "daemon")
    api = Htx(config_file, "api")
    try:
        assert api.wait_healthy()["daemon"] == "running"
        assert daemon.stop(signal.SIGTERM) == 0
        status, body = health(api)
        assert (status, body["daemon"]) == (200, "stopped")
    finally:
        daemon.stop()
        api.stop()


def test_a_locked_database_is_waited_out(config: Config, start_daemon, monkeypatch, photo_files: list[Path]) -> None:
    import sqlite3

    from models import db as db_module

    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_MS", 100)  # give up on the lock quickly
    daemon = start_daemon(config)
    locker = sqlite3.connect(config.data_dir / "htx.db", isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # another program holding the database
        copy_in(photo_files[0], config.inbox_dir / "a.jpg")
        wait_for(lambda: daemon.problem == "database is locked", what="the daemon to wait for the lock")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    wait_for(lambda: _done(config, 1), what="the image once the lock is gone")
    assert daemon.problem is None


def _used_bytes(mount_point: Path) -> int:
    usage = os.statvfs(mount_point)
    return (usage.f_blocks - usage.f_bfree) * usage.f_frsize


def _remount(mount_point: Path, size: str) -> None:
    import subprocess

    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)


def test_images_in_hand_when_the_disk_fills_finish_once_there_is_room(tmp_path: Path) -> None:
    """The operator's run: `htx run` on a small disk, files renamed into the inbox just as the
    disk fills, an upload meanwhile; once there is room every image is done, none left in
    `processing` (the image in hand when the fault hit used to stay there for good)."""
    from tests.helpers import photo_bytes

    with mounted_tmpfs(tmp_path / "disk", "40m") as disk:
        data_dir = disk / "data"
        config_file, config = _config(tmp_path, data_dir, data_dir / "inbox")
        staging = disk / "staging"
        staging.mkdir()
        for number in range(6):
            (staging / f"full{number}.jpg").write_bytes(photo_bytes(number, (1600, 1200)))
        htx = Htx(config_file, "run")
        try:
            htx.wait_healthy()
            _remount(disk, str(_used_bytes(disk) + 96 * 1024))
            for staged in sorted(staging.iterdir()):
                staged.rename(config.inbox_dir / staged.name)
            wait_for(lambda: "data disk full" in htx.log(), what="the daemon to say the disk is full")
            upload = httpx.post(
                f"{htx.base_url}/api/images", files={"file": ("up.jpg", photo_bytes(50), "image/jpeg")}, timeout=30
            )
            assert upload.status_code == 507, upload.text
            _remount(disk, "40m")
            wait_for(lambda: _done(config, 6), timeout=90, what="every image to be done once there is room")
            assert sorted(row["filename"] for row in read_images(config)) == [f"full{n}.jpg" for n in range(6)]
            assert os.listdir(config.inbox_dir) == []
            assert "resolved after" in htx.log()
            assert "Traceback" not in htx.log()
        finally:
            htx.stop()
