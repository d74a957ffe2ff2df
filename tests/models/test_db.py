from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from models import migrate
from models.config import Config
from models.db import make_engine


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
