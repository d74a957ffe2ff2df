"""A real `htx daemon` against an inbox a careless or hostile user filled: special files, names
Linux allows but UTF-8 does not, names at the length limit, unreadable files, writers that
append in turns, files far over the size limit."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from models import config as config_module
from models.config import Config
from tests.api.live import Htx
from tests.helpers import CORPUS_DIR, copy_in, finished, htx_command, read_images, wait_for, write_toml


def _config_file(folder: Path, **sections: dict[str, Any]) -> Path:
    settings: dict[str, dict[str, Any]] = {
        "paths": {"data_dir": "data"},
        "watch": {"settle_ms": 200, "rescan_s": 1},
        "pipeline": {"workers": 2},
        "caption": {"model": "none"},
        "log": {"level": "debug"},
    }
    for name, values in sections.items():
        settings.setdefault(name, {}).update(values)
    folder.mkdir(parents=True, exist_ok=True)
    return write_toml(folder / "htx.toml", settings)


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[..., tuple[Htx, Config]]]:
    """Start `htx daemon` on a config of its own; stopped (SIGTERM) after the test."""
    started: list[Htx] = []

    def _run(**sections: dict[str, Any]) -> tuple[Htx, Config]:
        config_file = _config_file(tmp_path, **sections)
        config = config_module.load(config_file)
        config.inbox_dir.mkdir(parents=True, exist_ok=True)
        daemon = Htx(config_file, "daemon")
        started.append(daemon)
        wait_for(lambda: "watching" in daemon.log(), timeout=30, what="the daemon to start")
        return daemon, config

    yield _run
    for daemon in started:
        daemon.stop()


def _rescans(daemon: Htx) -> int:
    return daemon.log().count("rescanned the inbox")


def _after_rescans(daemon: Htx, count: int = 2) -> None:
    """Wait until the daemon has looked through the whole inbox `count` more times."""
    seen = _rescans(daemon)
    wait_for(lambda: _rescans(daemon) >= seen + count, timeout=15, what=f"{count} rescans")


def _stop_quickly(daemon: Htx) -> float:
    asked = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=10) == 0, daemon.log()
    return time.monotonic() - asked


def test_special_files_are_never_read_followed_or_recorded(run_daemon, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = copy_in(CORPUS_DIR / "exif_gps.jpg", outside / "secret.jpg")
    secret_before = (secret.read_bytes(), secret.stat().st_mtime_ns)
    config = config_module.load(_config_file(tmp_path))
    inbox = config.inbox_dir
    inbox.mkdir(parents=True)
    os.mkfifo(inbox / "x.jpg")
    (inbox / "zero.jpg").symlink_to("/dev/zero")
    (inbox / "outside.jpg").symlink_to(secret)
    (inbox / "folder-link").symlink_to(outside, target_is_directory=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(inbox / "socket.jpg"))
    try:
        daemon, config = run_daemon()
        copy_in(CORPUS_DIR / "hopper.jpg", inbox / "real.jpg")
        wait_for(lambda: finished(read_images(config)), what="the regular file's record")
        _after_rescans(daemon)

        rows = read_images(config)
        assert [(row["filename"], row["status"]) for row in rows] == [("real.jpg", "done")]
        log = daemon.log()
        for name, kind in (
            ("x.jpg", "FIFO"),
            ("zero.jpg", "symbolic link"),
            ("outside.jpg", "symbolic link"),
            ("folder-link", "symbolic link"),
            ("socket.jpg", "socket"),
        ):
            line = f"{name}: not a regular file ({kind}): left in the inbox, not read"
            assert log.count(line) == 1, f"{line!r} not said exactly once:\n{log}"
        # The stop is prompt although a FIFO with no writer and an endless device are there.
        assert _stop_quickly(daemon) < 5
    finally:
        listener.close()
    assert (secret.read_bytes(), secret.stat().st_mtime_ns) == secret_before
    assert sorted(path.name for path in inbox.iterdir()) == sorted(
        ["x.jpg", "zero.jpg", "outside.jpg", "folder-link", "socket.jpg"]
    )
    stored = [path for path in (config.data_dir / "originals").rglob("*") if not path.is_dir()]
    assert len(stored) == 1 and not stored[0].is_symlink()
    assert hashlib.sha256(stored[0].read_bytes()).hexdigest() == rows[0]["sha256"]


def test_a_name_that_is_not_utf8_is_processed_and_shown_safely(run_daemon) -> None:
    daemon, config = run_daemon()
    latin1 = os.fsencode(config.inbox_dir) + b"/caf\xe9 \\ bar.jpg"
    with open(latin1, "wb") as handle:  # a Latin-1 Samba client's name
        handle.write((CORPUS_DIR / "hopper.jpg").read_bytes())
    wait_for(lambda: finished(read_images(config)), what="the record")
    [row] = read_images(config)
    assert row["status"] == "done"
    # The bad byte shown as \xe9; a backslash stays a backslash, not a folder.
    assert row["filename"] == "caf\\xe9 \\ bar.jpg"
    wait_for(lambda: not os.listdir(os.fsencode(config.inbox_dir)), what="the original to leave the inbox")
    assert "Traceback" not in daemon.log()


def test_names_at_the_length_limit_keep_their_real_reason(run_daemon) -> None:
    daemon, config = run_daemon()
    name = "n" * 251 + ".jpg"  # 255 bytes: the longest name Linux allows
    broken = (CORPUS_DIR / "hopper.jpg").read_bytes()[:3000]
    for number in range(2):  # the second one needs a -<sha> suffix in failed/
        path = config.inbox_dir / name
        path.write_bytes(broken + bytes([number]))
        wait_for(lambda: len(finished(read_images(config))) == number + 1, what=f"record {number + 1}")
    rows = read_images(config)
    assert [row["error_kind"] for row in rows] == ["corrupt", "corrupt"]
    assert all("internal" not in row["error"] for row in rows)
    failed = sorted(path.name for path in (config.data_dir / "failed").iterdir())
    assert len(failed) == 4 and all(len(name.encode()) <= 255 for name in failed)
    assert all(name.endswith((".jpg", ".jpg.error.txt")) for name in failed)
    for note in (config.data_dir / "failed").glob("*.error.txt"):
        assert "corrupt image" in note.read_text()
    assert os.listdir(config.inbox_dir) == []
    assert "Traceback" not in daemon.log()


def _as_unprivileged_root() -> list[str] | None:
    """A prefix that runs a command as root without the power to read others' files regardless
    of permissions, so that chmod 000 means what it says; None where that cannot be had."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def test_an_unreadable_file_is_named_once_and_taken_once_readable(tmp_path: Path) -> None:
    prefix = _as_unprivileged_root()
    if prefix is None:
        pytest.skip("running as root without setpriv: no way to be denied a read")
    config_file = _config_file(tmp_path)
    config = config_module.load(config_file)
    config.inbox_dir.mkdir(parents=True)
    locked = copy_in(CORPUS_DIR / "hopper.jpg", config.inbox_dir / "locked.jpg")
    locked.chmod(0)
    if subprocess.run([*prefix, "cat", str(locked)], capture_output=True).returncode == 0:
        pytest.skip("this machine lets the test read a file with mode 000")
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*prefix, *htx_command(config_file, "daemon")], stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        def rescans() -> int:
            return log_path.read_text().count("rescanned the inbox")

        wait_for(lambda: rescans() >= 3, timeout=15, what="three rescans")
        line = "locked.jpg: cannot be read (Permission denied): left in the inbox, not read"
        assert log_path.read_text().count(line) == 1, log_path.read_text()
        assert read_images(config) == []
        locked.chmod(0o644)
        wait_for(lambda: finished(read_images(config)), what="the file, readable now")
        assert read_images(config)[0]["status"] == "done"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


def test_a_writer_that_appends_and_closes_in_turns_makes_one_record(run_daemon) -> None:
    daemon, config = run_daemon()
    data = (CORPUS_DIR / "flower.jpg").read_bytes()
    path = config.inbox_dir / "scan.jpg"
    parts = 10
    for number in range(parts):
        with open(path, "ab") as handle:
            handle.write(data[number * len(data) // parts : (number + 1) * len(data) // parts])
        time.sleep(0.03)  # the writer's own pace: a scanner sends a band at a time
    wait_for(lambda: finished(read_images(config)) and not path.exists(), what="the record")
    _after_rescans(daemon)
    rows = read_images(config)
    assert [(row["status"], row["filename"], row["sha256"]) for row in rows] == [
        ("done", "scan.jpg", hashlib.sha256(data).hexdigest())
    ]


def test_a_huge_sparse_file_is_failed_without_being_read_whole(run_daemon) -> None:
    daemon, config = run_daemon(pipeline={"max_file_bytes": 1_000_000})
    huge = config.inbox_dir / "huge.jpg"
    with open(huge.with_name(".huge.part"), "wb") as handle:
        handle.write((CORPUS_DIR / "hopper.jpg").read_bytes())
        handle.truncate(50 * 1024**3)  # 50 GiB, sparse: hashing it all would take minutes
    huge.with_name(".huge.part").rename(huge)
    wait_for(lambda: finished(read_images(config)), timeout=20, what="the huge file's record")
    [row] = read_images(config)
    assert (row["status"], row["error_kind"]) == ("failed", "too_large")
    assert "(pipeline.max_file_bytes)" in row["error"]
    # Another file with the same start and size: not a duplicate to delete, since only the
    # start was compared. It is kept, in failed/.
    os.link((config.data_dir / "failed") / "huge.jpg", config.inbox_dir / "again.jpg")
    wait_for(lambda: not (config.inbox_dir / "again.jpg").exists(), what="the second huge file")
    assert ((config.data_dir / "failed") / "again.jpg").exists()
    assert len(read_images(config)) == 1
    assert _stop_quickly(daemon) < 5
