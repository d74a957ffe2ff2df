"""A real `htx daemon` process killed with SIGKILL in the middle of its work, then restarted."""

from __future__ import annotations

import pytest
import os
import signal
import subprocess
from pathlib import Path

from models.config import Config
from tests.helpers import htx_command, read_images, wait_for, write_config_file

FILES = 100

pytestmark = pytest.mark.both_backends


def test_sigkill_mid_batch_then_restart_loses_nothing_and_duplicates_nothing(
    config: Config, photo_files: list[Path], tmp_path: Path
) -> None:
    config_file = write_config_file(config, tmp_path / "htx.toml")
    photos = photo_files[:FILES]
    config.inbox_dir.mkdir(parents=True)
    for path in photos:
        os.link(path, config.inbox_dir / path.name)

    done_before = 0
    for _kill in range(3):
        process = subprocess.Popen(htx_command(config_file, "daemon"), stderr=subprocess.DEVNULL)
        try:
            # Let it get properly into the work, then kill it without warning.
            wait_for(
                lambda: sum(row["status"] == "done" for row in read_images(config)) >= done_before + 5,
                timeout=60,
                interval=0.005,
                what="progress before the kill",
            )
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        done_before = sum(row["status"] == "done" for row in read_images(config))
        if done_before == FILES:
            break
    assert done_before < FILES, "the kills came too late to interrupt anything"

    finished = subprocess.run(htx_command(config_file, "daemon", "--once"), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr

    rows = read_images(config)
    assert len(rows) == FILES
    assert {row["status"] for row in rows} == {"done"}
    assert len({row["sha256"] for row in rows}) == FILES
    assert sorted(row["filename"] for row in rows) == sorted(path.name for path in photos)
    assert list(config.inbox_dir.iterdir()) == []
    stored = sorted((config.data_dir / "originals").rglob("*.jpg"))
    assert len(stored) == FILES
    for row in rows:
        assert (config.data_dir / row["thumb_small_path"]).is_file()
        assert (config.data_dir / row["thumb_medium_path"]).is_file()
