"""create_app: the read-only engine its lifespan owns, health, the schema and the docs page."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from sqlalchemy import insert, text, update
from sqlalchemy.exc import OperationalError
from starlette.routing import Route

from api.app import create_app
from daemon.database import records
from models import migrate
from models.config import Config
from models.db import make_engine
from models.tables import DaemonState, WatchLease
from tests.api.conftest import config_for, ingest, serve


def _migrated(config: Config, revision: str = "head") -> None:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(config.database_url)
    migrate.upgrade(engine, revision)
    engine.dispose()


def _heartbeat(config: Config, age_s: float) -> None:
    engine = make_engine(config.database_url)
    with engine.begin() as connection:
        beat = records.utcnow() - timedelta(seconds=age_s)
        connection.execute(
            insert(DaemonState.__table__).values(
                id=1, pid=4242, started_at=beat, heartbeat_at=beat, caption_model=None, caption_device=None
            )
        )
    engine.dispose()


def test_without_a_database_reads_answer_503_json(config: Config) -> None:
    """The daemon has never run: no file at all. Clear JSON, never a crash."""
    with serve(config) as client:
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["database"] == "unavailable"
        for path in ("/api/images", "/api/images/1", "/api/stats", "/api/images/1/thumbnails/small"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert response.json() == {"error": "The database is not available: it is not created yet (the daemon creates it when it starts)."}
        assert client.get("/api/ping").status_code == 200
    assert not (config.data_dir / "htx.db").exists()  # the API created no database


def test_the_api_finds_the_database_once_the_daemon_made_it(config: Config) -> None:
    with serve(config) as client:
        assert client.get("/api/images").status_code == 503
        _migrated(config)
        assert client.get("/api/images").json()["items"] == []


def test_healthz_reports_the_daemon_heartbeat(config: Config) -> None:
    _migrated(config)
    with serve(config) as client:
        body = client.get("/healthz").json()
        assert body["status"] == "ok" and body["schema"] == "current" and body["daemon"] == "not started"
        _heartbeat(config, age_s=120)
        stale = client.get("/healthz")
    assert stale.status_code == 200
    assert stale.json()["daemon"] == "stale" and stale.json()["heartbeat_age_s"] >= 120


def test_healthz_with_a_running_daemon(config: Config, start_daemon) -> None:
    start_daemon(config)
    with serve(config) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["database"], body["schema"], body["daemon"]) == ("ok", "current", "running")
    assert body["heartbeat_age_s"] < 30 and body["daemon_pid"] == os.getpid()


def _watch_lease(config: Config, holder: int | None, lapsed_s: float) -> None:
    engine = make_engine(config.database_url)
    with engine.begin() as connection:
        until = records.utcnow() - timedelta(seconds=lapsed_s)
        connection.execute(update(WatchLease.__table__).values(holder=holder, lease_until=until))
    engine.dispose()


def test_healthz_says_intake_stopped_once_the_watch_lease_lapsed_unclaimed(config: Config) -> None:
    """The watching daemon froze or died and no standby took the inbox: files are no longer
    registered, which health must say though the database answers."""
    _migrated(config)
    _heartbeat(config, age_s=1)
    with serve(config) as client:
        _watch_lease(config, holder=1, lapsed_s=2)  # a renewal late: within the grace
        assert client.get("/healthz").status_code == 200
        _watch_lease(config, holder=1, lapsed_s=30)
        stopped = client.get("/healthz")
        _watch_lease(config, holder=None, lapsed_s=30)  # given back at a clean stop
        after_a_stop = client.get("/healthz")
    assert stopped.status_code == 503
    assert stopped.json()["status"] == "degraded"
    assert stopped.json()["problem"].startswith("intake stopped: the daemon that watches the inbox stopped renewing")
    assert after_a_stop.status_code == 200 and after_a_stop.json()["problem"] is None


def test_healthz_503_on_an_old_schema(config: Config) -> None:
    _migrated(config, revision="0001")
    with serve(config) as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["schema"] == "outdated"


def test_the_app_cannot_write(config: Config) -> None:
    _migrated(config)
    with serve(config) as client:
        reader = client.app.state.api.reader
        with pytest.raises(OperationalError, match="readonly|read-only"):
            reader.run_sync(lambda connection: connection.execute(text("DELETE FROM images")))


def test_reads_while_the_daemon_writes_and_after_it_stopped(config: Config) -> None:
    """mode=ro works with the daemon holding the WAL open, and with no -wal/-shm left at all."""
    ingest(config, ("hopper.jpg",))
    database = config.data_dir / "htx.db"
    for leftover in ("-wal", "-shm"):
        assert not database.with_name(database.name + leftover).exists()
    with serve(config) as client:
        assert [item["filename"] for item in client.get("/api/images").json()["items"]] == ["hopper.jpg"]
    from daemon.service import Daemon

    daemon = Daemon(config)
    daemon.start()
    try:
        with serve(config) as client:
            assert client.get("/api/stats").json()["by_status"]["done"] == 1
    finally:
        daemon.stop()


def test_openapi_documents_every_route(config: Config) -> None:
    with serve(config) as client:
        schema = client.get("/api/openapi.json").json()
        routes = [route for route in client.app.routes if isinstance(route, Route) and route.include_in_schema]
        pages = {route.path for route in client.app.routes if isinstance(route, Route) and not route.include_in_schema}
    assert pages == {"/", "/static/{name}"}  # the gallery: not part of the API
    assert schema["openapi"].startswith("3.") and schema["info"]["title"]
    for route in routes:
        path = route.path.replace(":int}", "}")
        methods = {method.lower() for method in route.methods or ()} - {"head"}
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), (path, methods)
        for method in methods:
            operation = schema["paths"][path][method]
            assert operation["summary"] and operation["responses"], (path, method)
    assert set(schema["paths"]["/api/images"]) == {"get", "post"}


def test_docs_page_is_self_contained(config: Config) -> None:
    with serve(config) as client:
        response = client.get("/api/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for path in ("/api/images", "/api/images/{image_id}/thumbnails/{size}", "/api/stats", "/healthz"):
        assert path in page
    # No script and nothing fetched from elsewhere: it must work on a server with no internet.
    assert "<script" not in page and "http://" not in page and "https://" not in page and "src=" not in page


def test_stale_staging_files_are_removed_at_start(config: Config) -> None:
    config.uploads_dir.mkdir(parents=True)
    old = config.uploads_dir / "old.part"
    fresh = config.uploads_dir / "fresh.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    with serve(config):
        pass
    assert not old.exists() and fresh.exists()


def test_each_app_has_its_own_config(tmp_path) -> None:
    """create_app takes its settings from the Config it is given, nothing global."""
    first = create_app(config_for(tmp_path / "a", api={"public_url": "https://a.example"}))
    second = create_app(config_for(tmp_path / "b"))
    assert first.state.api.config.api.public_url == "https://a.example"
    assert second.state.api.config.api.public_url == ""
