from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.service import Daemon
from models import config as config_module
from models.config import Config
from tests.helpers import photo_bytes
from tests.postgres import ClusterUnavailable, ThrowawayCluster
from tests.seaweedfs import BUCKET, StoreUnavailable, ThrowawayObjectStore

# Set by .ci/run: there, a PostgreSQL server that cannot start fails the run instead of
# skipping the PostgreSQL half of the tests.
REQUIRE_POSTGRES_ENV = "HTX_TEST_REQUIRE_POSTGRES"
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_backends: run the test (or module) on SQLite and on PostgreSQL, each with a fresh database"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
        metafunc.parametrize("backend", BACKENDS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """The database the test runs on: SQLite unless marked both_backends."""
    return getattr(request, "param", "sqlite")


def started_cluster() -> ThrowawayCluster:
    """A new throwaway PostgreSQL server; the test skips (fails where PostgreSQL is required)
    when none can start here."""
    try:
        return ThrowawayCluster().start()
    except ClusterUnavailable as error:
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            pytest.fail(f"PostgreSQL is required (${REQUIRE_POSTGRES_ENV}) but could not start: {error}")
        pytest.skip(f"no PostgreSQL server could be started: {error}")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[ThrowawayCluster]:
    """A throwaway PostgreSQL server for the whole run, started on first use."""
    cluster = started_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def own_postgres_cluster() -> Iterator[ThrowawayCluster]:
    """A PostgreSQL server of the test's own, which it may stop and start again."""
    cluster = started_cluster()
    yield cluster
    cluster.stop()


def new_database_url(request: pytest.FixtureRequest) -> str:
    """database.url for a fresh database on the test's backend ("" is SQLite's default file
    in the data folder)."""
    if request.getfixturevalue("backend") == "sqlite":
        return ""
    return request.getfixturevalue("postgres_cluster").new_database()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, backend: str) -> str:
    return new_database_url(request)


@pytest.fixture
def backend_url(database_url: str, tmp_path: Path) -> str:
    """A full URL on the test's backend, for tests that make engines themselves."""
    return database_url or f"sqlite:///{tmp_path / 'htx.db'}"


@pytest.fixture
def make_config(tmp_path: Path, database_url: str) -> Callable[..., Config]:
    """A Config with its data folder under tmp_path, on the test's backend; keyword arguments
    override sections."""

    def _make(**sections: dict[str, Any]) -> Config:
        data: dict[str, dict[str, Any]] = {
            "paths": {"data_dir": "data"},
            "database": {"url": database_url},
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


def started_object_store() -> ThrowawayObjectStore:
    """A new SeaweedFS on loopback ports; the test skips, saying why, when none can start here."""
    try:
        return ThrowawayObjectStore().start()
    except StoreUnavailable as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def object_store_server() -> Iterator[ThrowawayObjectStore]:
    """A real S3 server (SeaweedFS) for the session; each test keeps to a prefix of its own."""
    server = started_object_store()
    yield server
    server.stop()


def s3_storage(server: ThrowawayObjectStore, prefix: str) -> dict[str, Any]:
    """The [storage] section of a config on `server`'s bucket, under `prefix`."""
    return {
        "backend": "s3",
        "s3": {
            "endpoint": server.endpoint,
            "bucket": BUCKET,
            "prefix": prefix,
            "path_style": True,
            "allow_http": True,
            "timeout_s": 5.0,
            "access_key_id": server.access_key_id,
            "secret_access_key": server.secret_access_key,
        },
    }


@pytest.fixture(params=["folder", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store a test runs on: the data folder, then an S3 bucket."""
    return request.param


@pytest.fixture
def storage_section(request: pytest.FixtureRequest, store_kind: str, tmp_path: Path) -> dict[str, Any]:
    if store_kind == "folder":
        return {"backend": "folder"}
    return s3_storage(request.getfixturevalue("object_store_server"), tmp_path.name)


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


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder every user may reach (pytest's own temp folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="htx-model-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)
