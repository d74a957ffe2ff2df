"""Fixtures of the API tests: databases made by the real daemon, and the app under TestClient."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from daemon.database import records
from daemon.service import Daemon
from models import config as config_module
from models import migrate
from models.config import Config
from models.db import make_engine
from tests.conftest import new_database_url
from tests.helpers import CORPUS_DIR, read_images, wait_for

# Corpus files the route tests are built on: a plain JPEG, a camera JPEG with GPS, a
# transparent PNG (PNG thumbnails), and a broken PNG (a failed record).
LIBRARY_FILES = ("hopper.jpg", "exif_gps.jpg", "flower.jpg", "basn6a08.png", "broken.png")

def config_for(base_dir: Path, **sections: dict[str, Any]) -> Config:
    """The settings of the `make_config` fixture, for fixtures wider than one test."""
    data: dict[str, dict[str, Any]] = {
        "paths": {"data_dir": "data"},
        "watch": {"settle_ms": 200, "rescan_s": 0},
        "pipeline": {"workers": 2},
        "caption": {"model": "none"},
        "api": {"register_timeout_s": 5.0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return config_module.parse(data, base_dir=base_dir)

def ingest(config: Config, names: tuple[str, ...]) -> None:
    """Run the real daemon once over these corpus files, as `htx daemon --once` does."""
    config.inbox_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(CORPUS_DIR / name, config.inbox_dir / name)
    daemon = Daemon(config, observe=False)
    daemon.start()
    try:
        assert daemon.wait_idle(timeout=60), "the daemon did not finish the files"
    finally:
        daemon.stop()

def insert_pending(config: Config, sha256: str, filename: str = "waiting.jpg") -> int:
    """A row as the daemon registers it, before any processing (the test writes it directly)."""
    engine = make_engine(config.database_url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as connection:
            return records.insert_pending(
                connection, sha256=sha256, filename=filename, inbox_path=filename, size_bytes=10, hash_ms=1.0
            )
    finally:
        engine.dispose()

@dataclass(frozen=True)
class Library:
    """A database the daemon made from LIBRARY_FILES, plus one pending row."""

    config: Config
    ids: dict[str, int]  # by filename
    pending_id: int

@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, backend: str) -> Library:
    config = config_for(tmp_path_factory.mktemp("library"), database={"url": new_database_url(request)})
    ingest(config, LIBRARY_FILES)
    pending_id = insert_pending(config, "f" * 64)
    rows = read_images(config)
    return Library(config, {row["filename"]: row["id"] for row in rows}, pending_id)

# TestClient's requests say "Host: testserver": like a name in the server's api.allowed_hosts.
TEST_HOST = "testserver"


@contextmanager
def serve(config: Config, **client_options: Any) -> Iterator[TestClient]:
    """The app under TestClient, its lifespan running; it answers to TestClient's host name."""
    if TEST_HOST not in config.api.allowed_hosts:
        config = config_module.replace(config, api={"allowed_hosts": (*config.api.allowed_hosts, TEST_HOST)})
    with TestClient(create_app(config), **client_options) as client:
        yield client

@pytest.fixture
def library_client(library: Library) -> Iterator[TestClient]:
    with serve(library.config) as client:
        yield client

def wait_status(config: Config, sha256: str, statuses: tuple[str, ...] = ("done", "failed")) -> dict[str, Any]:
    return wait_for(
        lambda: next((row for row in read_images(config) if row["sha256"] == sha256 and row["status"] in statuses and row["stage"] is None), None),
        timeout=30,
        what=f"image {sha256[:12]} to reach {statuses}",
    )
