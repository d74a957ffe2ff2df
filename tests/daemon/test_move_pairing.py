"""Renames in and out of the inbox: registered at once, and renames inside it seen as moves."""

from __future__ import annotations

import shutil
import statistics
import time

from models.config import Config
from tests.helpers import CORPUS_DIR, finished, read_images, wait_for


def test_a_file_renamed_in_after_one_moved_out_is_registered_at_once(config: Config, start_daemon) -> None:
    """watchdog holds an unpaired IN_MOVED_FROM (the daemon moving an original out) and all
    events behind it; by default for 0.5 s, which every such arrival used to wait."""
    daemon = start_daemon(config)
    staging = config.data_dir / "staging"
    staging.mkdir()
    source = (CORPUS_DIR / "hopper.jpg").read_bytes()
    delays = []
    for number in range(5):
        path = staging / f"{number}.jpg"
        path.write_bytes(source + bytes([number]))  # distinct bytes, still a JPEG
        started = time.monotonic()
        path.rename(config.inbox_dir / path.name)
        wait_for(lambda: len(read_images(config)) == number + 1, timeout=10, interval=0.005, what="registration")
        delays.append(time.monotonic() - started)
        assert daemon.wait_idle(timeout=20)  # its original is moved out before the next arrives
    assert statistics.median(delays) < 0.3, delays


def test_a_rename_inside_the_inbox_is_one_file(config: Config, start_daemon) -> None:
    start_daemon(config)
    hidden = config.inbox_dir / ".flower.jpg.tmp"  # ignored while it is being written
    shutil.copyfile(CORPUS_DIR / "flower.jpg", hidden)
    hidden.rename(config.inbox_dir / "flower.jpg")
    rows = wait_for(lambda: finished(read_images(config)), what="the renamed file to be processed")
    assert [(row["filename"], row["status"]) for row in rows] == [("flower.jpg", "done")]
