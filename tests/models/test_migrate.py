"""The migrations build exactly the schema of models/tables.py, and 0002's totals stay exact."""

from __future__ import annotations

import random
from datetime import datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, delete, func, insert, inspect, select, update

from models import migrate
from models.db import make_engine
from models.tables import SEARCH_COLUMN, SEARCH_TABLE, Base, Image, ImageTotals, is_schema_object


pytestmark = pytest.mark.both_backends


def test_migrations_match_the_tables(backend: str, backend_url: str) -> None:
    engine = make_engine(backend_url)
    migrate.upgrade(engine)
    migrate.upgrade(engine)  # a second start changes nothing
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": is_schema_object})
        differences = compare_metadata(context, Base.metadata)
        unmanaged = set(inspect(connection).get_table_names()) - set(Base.metadata.tables)
        columns = {column["name"] for column in inspect(connection).get_columns("images")}
    engine.dispose()
    assert differences == []
    # What the comparison leaves out is the search index (0003) and nothing else: FTS5's
    # tables on SQLite, a column of `images` on PostgreSQL.
    search = {SEARCH_TABLE, *(f"{SEARCH_TABLE}_{shadow}" for shadow in ("data", "idx", "docsize", "config"))}
    assert unmanaged == (search if backend == "sqlite" else set()) | {"alembic_version"}
    assert not any(is_schema_object(name, "table", {}) for name in search)
    assert columns - set(Image.__table__.c.keys()) == (set() if backend == "sqlite" else {SEARCH_COLUMN})
    reader = make_engine(backend_url, readonly=True)
    assert migrate.is_current(reader)
    reader.dispose()


def test_image_totals_follow_every_write(backend_url: str) -> None:
    engine = make_engine(backend_url)
    migrate.upgrade(engine)
    images = Image.__table__
    rng = random.Random(4)
    statuses = ("pending", "processing", "done", "failed")
    with engine.begin() as connection:
        connection.execute(
            insert(images),
            [{"sha256": f"{n:064x}", "filename": f"{n}.jpg", "status": "pending", "received_at": datetime(2026, 1, 1),
              "size_bytes": 1, "hash_ms": rng.uniform(1, 5)} for n in range(300)],
        )
        for image_id in range(1, 301):
            status = rng.choice(statuses)
            timed = status in ("done", "failed")
            connection.execute(
                update(images).where(images.c.id == image_id).values(
                    status=status,
                    processing_ms=rng.uniform(10, 500) if timed else None,
                    caption_ms=rng.uniform(100, 900) if status == "done" and rng.random() < 0.5 else None,
                )
            )
        connection.execute(update(images).where(images.c.id % 7 == 0).values(status="pending", processing_ms=None))
        connection.execute(delete(images).where(images.c.id % 11 == 0))
    with engine.connect() as connection:
        direct = {
            row.status: row
            for row in connection.execute(
                select(images.c.status, func.count().label("n"), func.count(images.c.processing_ms).label("timed"),
                       func.coalesce(func.sum(images.c.processing_ms), 0).label("ms"), func.count(images.c.caption_ms).label("captioned"),
                       func.coalesce(func.sum(images.c.hash_ms), 0).label("hash")).group_by(images.c.status)
            )
        }
        totals = {row.status: row for row in connection.execute(select(ImageTotals.__table__))}
    engine.dispose()
    for status in statuses:
        kept = totals[status]
        expected = direct.get(status)
        assert kept.images == (expected.n if expected else 0), status
        assert kept.n_processing == (expected.timed if expected else 0), status
        assert kept.n_caption == (expected.captioned if expected else 0), status
        assert kept.s_processing == pytest.approx(expected.ms if expected else 0, abs=1e-6), status
        assert kept.s_hash == pytest.approx(expected.hash if expected else 0, abs=1e-6), status


def test_an_id_is_never_given_twice(backend_url: str) -> None:
    engine = make_engine(backend_url)
    migrate.upgrade(engine)
    images = Image.__table__
    row = {"filename": "a.jpg", "status": "done", "received_at": datetime(2026, 1, 1), "size_bytes": 1}
    with engine.begin() as connection:
        first, newest = (
            connection.execute(insert(images).values(sha256=f"{n:064x}", **row).returning(images.c.id)).scalar_one()
            for n in (1, 2)
        )
        connection.execute(delete(images).where(images.c.id == newest))
        again = connection.execute(insert(images).values(sha256=f"{2:064x}", **row).returning(images.c.id)).scalar_one()
    engine.dispose()
    assert first < newest < again


def test_0008_remakes_the_sqlite_table_keeping_rows_search_and_totals(tmp_path) -> None:
    from alembic import command

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0007")
    with engine.begin() as connection:
        images = Table("images", MetaData(), autoload_with=connection)  # as 0007 has it
        connection.execute(
            insert(images),
            [{"sha256": f"{n:064x}", "filename": f"holiday {n}.jpg", "status": "done", "received_at": datetime(2026, 1, 1),
              "size_bytes": n, "processing_ms": 10.0 * n, "caption": f"a dog number{n}"} for n in range(1, 6)],
        )
        connection.execute(delete(images).where(images.c.id == 5))  # 0007: id 5 would be given again
        before = connection.execute(select(images).order_by(images.c.id)).all()
        totals_before = connection.execute(select(ImageTotals.__table__)).all()

    migrate.upgrade(engine, "0008")

    with engine.begin() as connection:
        assert connection.execute(select(images).order_by(images.c.id)).all() == before
        assert connection.execute(select(ImageTotals.__table__)).all() == totals_before
        found = connection.exec_driver_sql(f"SELECT rowid FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH 'number3'").all()
        assert found == [(3,)]
        new_id = connection.execute(
            insert(images).values(sha256="f" * 64, filename="new.jpg", status="done", received_at=datetime(2026, 1, 2), size_bytes=1)
            .returning(images.c.id)
        ).scalar_one()
        connection.execute(delete(images).where(images.c.id == new_id))  # triggers work: totals follow
        assert connection.execute(select(func.sum(ImageTotals.__table__.c.images))).scalar_one() == 4
    assert new_id == 5  # 0007 had not kept 5 as used; from 0008 on, nothing is given twice
    config = migrate._alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
    migrate.upgrade(engine)
    with engine.connect() as connection:
        assert len(connection.execute(select(images)).all()) == 4
    engine.dispose()


def test_0012_gives_existing_rows_their_sort_key_and_comes_off_again(backend_url: str) -> None:
    from alembic import command

    engine = make_engine(backend_url)
    migrate.upgrade(engine, "0011")
    with engine.begin() as connection:
        old = Table("images", MetaData(), autoload_with=connection)  # as 0011 has it
        connection.execute(insert(old), [
            {"sha256": "a" * 64, "filename": "camera.jpg", "status": "done", "size_bytes": 1,
             "received_at": datetime(2026, 1, 2, 3, 4, 5, 678901), "taken_at": "2019-07-01T10:20:30"},
            {"sha256": "b" * 64, "filename": "scan.png", "status": "done", "size_bytes": 1,
             "received_at": datetime(2026, 1, 2, 3, 4, 5, 678901), "taken_at": None},
            {"sha256": "c" * 64, "filename": "waiting.jpg", "status": "pending", "size_bytes": 1,
             "received_at": datetime(2026, 12, 31, 23, 59, 59), "taken_at": None},
        ])

    migrate.upgrade(engine)

    images = Image.__table__
    with engine.begin() as connection:
        keys = dict(connection.execute(select(images.c.filename, images.c.sort_taken)).all())
        assert keys == {"camera.jpg": "2019-07-01T10:20:30", "scan.png": "2026-01-02T03:04:05", "waiting.jpg": "2026-12-31T23:59:59"}
        # A row written now gets its key from the values it is written with.
        connection.execute(insert(images).values(sha256="d" * 64, filename="new.jpg", status="done", size_bytes=1,
                                                 received_at=datetime(2026, 2, 1), taken_at="2001-01-01T00:00:00"))
        assert connection.execute(select(images.c.sort_taken).where(images.c.sha256 == "d" * 64)).scalar_one() == "2001-01-01T00:00:00"
    config = migrate._alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0011")
    with engine.connect() as connection:
        assert "sort_taken" not in {column["name"] for column in inspect(connection).get_columns("images")}
    migrate.upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).where(images.c.sort_taken != "")).scalar_one() == 4
    engine.dispose()
