from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import InternalError, OperationalError

from models import migrate
from models.config import Config
from models.db import backend, display_url, make_engine


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
