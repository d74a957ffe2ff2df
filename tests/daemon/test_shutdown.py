"""SIGTERM in the middle of a batch: a clean, quick exit that loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from models.config import Config
from tests.helpers import htx_command, read_images, wait_for, write_config_file


@pytest.fixture(params=["none", "tiny-blip"])
def shutdown_config(request: pytest.FixtureRequest, make_config: Callable[..., Config]) -> Config:
    """Without captions, and with a caption model whose batches are still filling at SIGTERM."""
    if request.param == "none":
        return make_config()
    model = request.getfixturevalue("tiny_blip")
    return make_config(caption={"model": str(model), "max_new_tokens": 20, "batch_size": 8, "batch_wait_ms": 1000})


def test_sigterm_mid_batch_exits_0_quickly_and_a_restart_finishes_everything(
    shutdown_config: Config, photo_files: list[Path], tmp_path: Path
) -> None:
    config = shutdown_config
    config_file = write_config_file(config, tmp_path / "htx.toml")
    config.inbox_dir.mkdir(parents=True)
    photos = photo_files[:50]
    for path in photos:
        os.link(path, config.inbox_dir / path.name)

    process = subprocess.Popen(htx_command(config_file, "daemon"), stderr=subprocess.PIPE, text=True)
    wait_for(
        lambda: sum(row["status"] == "done" for row in read_images(config)) >= 5,
        timeout=60,
        interval=0.005,
        what="some progress",
    )
    process.send_signal(signal.SIGTERM)
    asked = time.monotonic()
    _out, err = process.communicate(timeout=15)
    took = time.monotonic() - asked
    assert process.returncode == 0, err
    assert took < 10, f"took {took:.1f} s to stop"

    rows = read_images(config)
    assert "processing" not in {row["status"] for row in rows}
    done = sum(row["status"] == "done" and row["stage"] is None for row in rows)
    assert done < len(photos), "stopped too late to interrupt anything"
    if config.caption.model != "none":
        # Stopped while images were waiting for (or in) a caption batch: they went back, to
        # the pipeline (from this process's batch) or to the caption queue (done already).
        assert any((row["status"] == "pending" and row["thumb_small_path"]) or row["stage"] == "caption" for row in rows)

    subprocess.run(htx_command(config_file, "daemon", "--once"), check=True, capture_output=True, timeout=120)
    rows = read_images(config)
    assert len(rows) == len(photos)
    assert {row["status"] for row in rows} == {"done"}
    assert list(config.inbox_dir.iterdir()) == []
    if config.caption.model != "none":
        assert all(row["caption"] and row["caption_error"] is None for row in rows)
