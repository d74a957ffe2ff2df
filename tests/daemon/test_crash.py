"""A real `htx daemon` process killed with SIGKILL in the middle of its work, then restarted."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from models.config import Config
from tests.helpers import read_images, wait_for

FILES = 100


def _photo(number: int) -> bytes:
    image = Image.effect_noise((1200, 900), 40 + number % 30).convert("RGB")
    image.paste((number * 2 % 256, 80, 255 - number * 2 % 256), (0, 0, 40 + number, 40))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for number in range(FILES):
        path = folder / f"photo-{number:03}.jpg"
        path.write_bytes(_photo(number))
        paths.append(path)
    return paths


def _write_config(config: Config, path: Path) -> Path:
    path.write_text(
        f'[paths]\ndata_dir = "{config.data_dir}"\n'
        '[watch]\nsettle_ms = 200\n[pipeline]\nworkers = 2\n[caption]\nmodel = "none"\n'
    )
    return path


def _htx(config_file: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", "--config", str(config_file), *args]


def test_sigkill_mid_batch_then_restart_loses_nothing_and_duplicates_nothing(
    config: Config, photos: list[Path], tmp_path: Path
) -> None:
    config_file = _write_config(config, tmp_path / "htx.toml")
    config.inbox_dir.mkdir(parents=True)
    for path in photos:
        os.link(path, config.inbox_dir / path.name)

    done_before = 0
    for _kill in range(3):
        process = subprocess.Popen(_htx(config_file, "daemon"), stderr=subprocess.DEVNULL)
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

    finished = subprocess.run(_htx(config_file, "daemon", "--once"), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr

    rows = read_images(config)
    assert len(rows) == FILES
    assert {row["status"] for row in rows} == {"done"}
    assert len({row["sha256"] for row in rows}) == FILES
    assert sorted(row["filename"] for row in rows) == sorted(path.name for path in photos)
    assert list(config.inbox_dir.iterdir()) == []
    stored = sorted(config.originals_dir.rglob("*.jpg"))
    assert len(stored) == FILES
    for row in rows:
        assert (config.data_dir / row["thumb_small_path"]).is_file()
        assert (config.data_dir / row["thumb_medium_path"]).is_file()
