"""Migration 0003: the FTS5 index covers rows that existed before it and follows every write."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, Engine, MetaData, Table, delete, insert, text, update

from models import migrate
from models.db import make_engine
from models.tables import SEARCH_TABLE, Image

images = Image.__table__


def _row(number: int, filename: str, caption: str | None = None, status: str = "pending") -> dict:
    return {
        "sha256": f"{number:064x}", "filename": filename, "caption": caption, "status": status,
        "received_at": datetime(2026, 1, 1), "size_bytes": 1,
    }


def _as_it_is(connection: Connection) -> Table:
    """`images` as the database has it now: an older revision lacks later columns, which
    inserts through Image.__table__ would name (sort_taken's default, 0012)."""
    return Table("images", MetaData(), autoload_with=connection)


def _found(connection: Connection, query: str) -> list[int]:
    rows = connection.execute(
        text(f"SELECT rowid FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH :query ORDER BY rowid"), {"query": query}
    )
    return [row[0] for row in rows]


def _check_integrity(engine: Engine) -> None:
    # With rank 1, FTS5 also compares the index with the content table (`images`).
    with engine.begin() as connection:
        connection.execute(text(f"INSERT INTO {SEARCH_TABLE} ({SEARCH_TABLE}, rank) VALUES ('integrity-check', 1)"))


def test_rows_from_before_the_migration_are_indexed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'htx.db'}")
    migrate.upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(insert(_as_it_is(connection)), [_row(1, "beach.jpg", "a dog on a beach", "done"), _row(2, "Café.png")])
    migrate.upgrade(engine)
    with engine.connect() as connection:
        assert _found(connection, "dog") == [1]
        assert _found(connection, "cafe") == [2]  # case and accents folded
        assert _found(connection, "status : done") == [1]
    _check_integrity(engine)
    engine.dispose()


def test_the_index_follows_inserts_updates_and_deletes(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'htx.db'}")
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(insert(images), [_row(n, f"IMG_{n:04}.jpg") for n in range(1, 6)])
    with engine.begin() as connection:
        assert _found(connection, "img") == [1, 2, 3, 4, 5]
        assert _found(connection, "0003") == [3]
        connection.execute(update(images).where(images.c.id == 3).values(status="processing"))
        connection.execute(update(images).where(images.c.id == 3).values(status="done", caption="a red kite"))
        connection.execute(update(images).where(images.c.id == 4).values(caption="a red bus", status="done"))
        connection.execute(update(images).where(images.c.id == 4).values(caption="a blue bus"))
        connection.execute(update(images).where(images.c.id == 5).values(filename="renamed.jpg"))
        connection.execute(update(images).where(images.c.id == 2).values(caption=None))  # unchanged: no index write
        connection.execute(delete(images).where(images.c.id == 1))
    with engine.connect() as connection:
        assert _found(connection, "red") == [3]
        assert _found(connection, "bus") == [4]
        assert _found(connection, "status : done") == [3, 4]
        assert _found(connection, "status : pending") == [2, 5]
        assert _found(connection, "img") == [2, 3, 4]
        assert _found(connection, "renamed") == [5]
    _check_integrity(engine)
    engine.dispose()


def test_downgrade_removes_the_index(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'htx.db'}")
    migrate.upgrade(engine)
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    with engine.begin() as connection:
        names = {row[0] for row in connection.execute(text("SELECT name FROM sqlite_master"))}
        assert not {name for name in names if name.startswith(SEARCH_TABLE)}
        connection.execute(insert(_as_it_is(connection)), [_row(1, "after.jpg")])  # no trigger left behind
    migrate.upgrade(engine)
    with engine.connect() as connection:
        assert _found(connection, "after") == [1]
    engine.dispose()
