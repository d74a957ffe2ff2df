from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.service import Daemon
from models import config as config_module
from models.config import Config
from tests.helpers import photo_bytes


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """A Config with its data folder under tmp_path; keyword arguments override sections."""

    def _make(**sections: dict[str, Any]) -> Config:
        data: dict[str, dict[str, Any]] = {
            "paths": {"data_dir": "data"},
            "watch": {"settle_ms": 200, "rescan_s": 0},
            "pipeline": {"workers": 2},
            "caption": {"model": "none"},
        }
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        return config_module.parse(data, base_dir=tmp_path)

    return _make


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a tiny random-weight BLIP (processor and model), built once per run."""
    from tests.daemon.blip_fixtures import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


@pytest.fixture
def start_daemon() -> Iterator[Callable[..., Daemon]]:
    """Start an in-process daemon (real observer, real SQLite file); stopped after the test."""
    started: list[Daemon] = []

    def _start(config: Config, **kwargs: Any) -> Daemon:
        daemon = Daemon(config, **kwargs)
        daemon.start()
        started.append(daemon)
        return daemon

    yield _start
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="session")
def photo_files(tmp_path_factory) -> list[Path]:
    """100 distinct 1200x900 JPEGs, made once per test session."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for number in range(100):
        path = folder / f"photo-{number:03}.jpg"
        path.write_bytes(photo_bytes(number))
        paths.append(path)
    return paths
