from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import text
from sqlalchemy.exc import InternalError, OperationalError

from models import migrate
from models import config as config_module
from models.config import Config
from models.db import READER_POOL_SIZE, backend, display_url, make_engine
from tests.postgres import ROLE


def test_writer_engine_uses_wal_busy_timeout_and_foreign_keys(config: Config) -> None:
    engine = make_engine(config.database_url)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_read_only_engine_cannot_write(config: Config) -> None:
    writer = make_engine(config.database_url)
    migrate.upgrade(writer)
    reader = make_engine(config.database_url, readonly=True)
    with reader.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM images")).scalar() == 0
    with pytest.raises(OperationalError, match="readonly|read-only"), reader.begin() as connection:
        connection.execute(text("DELETE FROM images"))
    reader.dispose()
    writer.dispose()


def test_postgresql_engines_bound_their_waits_and_readers_cannot_write(postgres_cluster) -> None:
    url = postgres_cluster.new_database()
    writer = make_engine(url)
    migrate.upgrade(writer)
    reader = make_engine(url.replace("postgresql+psycopg://", "postgresql://"), readonly=True)
    with writer.connect() as connection:
        assert connection.execute(text("SHOW statement_timeout")).scalar() == "30s"
        assert connection.execute(text("SHOW lock_timeout")).scalar() == "10s"
        assert connection.execute(text("SHOW TimeZone")).scalar() == "UTC"
    with reader.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM images")).scalar() == 0
        assert connection.execute(text("SHOW statement_timeout")).scalar() == "5s"
        # Each statement a read-only transaction of its own: no BEGIN and ROLLBACK round trips.
        assert connection.connection.driver_connection.autocommit is True
        assert connection.execute(text("SHOW transaction_read_only")).scalar() == "on"
    with writer.connect() as connection:
        assert connection.connection.driver_connection.autocommit is False
    with pytest.raises(InternalError, match="read-only transaction"), reader.begin() as connection:
        connection.execute(text("DELETE FROM images"))
    reader.dispose()
    writer.dispose()


def test_urls_are_shown_without_their_password() -> None:
    url = "postgresql+psycopg://htx:s3cret@db.example.org:5432/htx"
    assert display_url(url) == "postgresql+psycopg://htx:***@db.example.org:5432/htx"
    assert display_url("postgresql://htx@/htx?host=/run/postgresql") == "postgresql+psycopg://htx@/htx?host=%2Frun%2Fpostgresql"
    assert backend("postgres://htx@/htx") == "postgresql" and backend("sqlite:///data/htx.db") == "sqlite"


def test_htx_run_on_postgresql_opens_no_more_connections_than_the_readme_counts(postgres_cluster, tmp_path) -> None:
    """README, "Connections": a daemon keeps 3 (4 for a moment at start), an API at most 8 for
    reads and 1 for changes, whatever the load; each named in pg_stat_activity."""
    import threading

    import httpx

    from tests.api.live import Htx, write_config
    from tests.helpers import photo_bytes, read_images, wait_for

    url = postgres_cluster.new_database()
    config_file = write_config(tmp_path, database_url=url)
    config = config_module.load(config_file)
    observer = make_engine(url.replace(f"{ROLE}@", "postgres@"), application_name="htx-test-observer")
    peaks: Counter[str] = Counter()
    done = threading.Event()

    def observe() -> None:
        while not done.is_set():
            with observer.connect() as connection:
                rows = connection.execute(
                    text("SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = current_database() GROUP BY 1")
                ).all()
            for name, count in rows:
                peaks[name] = max(peaks[name], count)

    def read_hard(base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            while not done.is_set():
                for path in ("/api/images?limit=5", "/api/stats", "/healthz", "/api/images/1"):
                    client.get(path)

    htx = Htx(config_file, "run")
    threads = [threading.Thread(target=observe)]
    try:
        htx.wait_healthy()
        threads += [threading.Thread(target=read_hard, args=(htx.base_url,)) for _ in range(16)]
        for thread in threads:
            thread.start()
        for number in range(30):
            (config.inbox_dir / f"p{number}.jpg").write_bytes(photo_bytes(number, size=(400, 300)))
        wait_for(lambda: [row["status"] for row in read_images(config)].count("done") == 30, timeout=90, what="the photos")
    finally:
        done.set()
        for thread in threads:
            if thread.is_alive():
                thread.join()
        assert htx.stop() == 0, htx.log()[-2000:]
        observer.dispose()
    assert 2 <= peaks["htx-daemon"] <= 4, peaks
    assert 1 <= peaks["htx-api"] <= READER_POOL_SIZE, peaks
    assert peaks["htx-api-writes"] <= 1, peaks
