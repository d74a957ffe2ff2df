from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.report import stats_table
from models.config import Config
from models.stats_reads import Stats
from models.tables import STATUSES
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


def test_stats_name_the_caption_runtime() -> None:
    now = datetime(2026, 12, 3)
    stats = Stats(
        by_status=dict.fromkeys(STATUSES, 0), average_ms=0.0, p50_ms=0.0, p95_ms=0.0, stage_average_ms={},
        processed_last_hour=0, caption_model="Salesforce/blip-image-captioning-base", caption_device="cpu",
        caption_runtime="openvino bfloat16",
    )
    lines = stats_table(stats, None, now=now)
    assert "caption model Salesforce/blip-image-captioning-base on cpu (openvino bfloat16)" in lines


def test_a_stage_nothing_ran_gets_no_line_rather_than_zero_ms() -> None:
    stats = Stats(
        by_status=dict.fromkeys(STATUSES, 0) | {"done": 3}, average_ms=40.0, p50_ms=38.0, p95_ms=50.0,
        stage_average_ms={"hash": 1.5, "metadata": 2.0, "thumbnails": 30.0, "caption": 0.0},
        processed_last_hour=3, caption_model=None, caption_device=None, caption_runtime=None,
    )
    lines = stats_table(stats, None, now=datetime(2026, 12, 3))
    assert any(line.split() == ["thumbnails", "30", "ms"] for line in lines)
    assert not any(line.strip().startswith("caption ") and "ms" in line for line in lines), lines
