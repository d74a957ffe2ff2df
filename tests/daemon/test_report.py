from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.cli import main
from models.config import Config
from tests.helpers import CORPUS_DIR, copy_in, finished, read_images, wait_for, write_config_file

pytestmark = pytest.mark.both_backends


def test_stats_prints_counts_rates_and_times(config: Config, start_daemon, tmp_path: Path, capsys) -> None:
    start_daemon(config)
    for name in ("hopper.jpg", "flower.jpg", "hopper.png", "hopper.gif"):
        copy_in(CORPUS_DIR / name, config.inbox_dir / name)
    wait_for(lambda: len(finished(read_images(config))) == 4, what="four images")
    config_file = write_config_file(config, tmp_path / "htx.toml")
    assert main(["--config", str(config_file), "stats"]) == 0
    out = capsys.readouterr().out.splitlines()
    table = {line.split()[0]: line.split()[1:] for line in out if line.strip()}
    assert table["images"] == ["4"]
    assert table["done"] == ["3", "75.0", "%"]
    assert table["failed"] == ["1", "25.0", "%"]
    assert table["queue"] == ["depth", "0"]
    assert table["last"] == ["hour", "4", "processed"]
    assert table["total"][1] == "ms" and float(table["total"][0].replace(",", "")) > 0
    assert table["caption"] == ["model", "none"]
    assert table["daemon"][0] == "running" and f"pid {os.getpid()}," in " ".join(table["daemon"])


def test_stats_without_a_database_says_so(config: Config, tmp_path: Path, capsys) -> None:
    config_file = write_config_file(config, tmp_path / "htx.toml")
    assert main(["--config", str(config_file), "stats"]) == 1
    assert "no database yet" in capsys.readouterr().err
