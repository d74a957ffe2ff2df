"""The database writer: its two ways of writing, and a server that restarted between writes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, select, update

from daemon.database import records
from daemon.errors import EnvironmentFault
from daemon.database.writer import DatabaseWriter
from models import migrate
from models.db import make_engine
from models.tables import Image
from tests.postgres import ThrowawayCluster

images = Image.__table__


def _writer(engine: Engine) -> DatabaseWriter:
    migrate.upgrade(engine)
    writer = DatabaseWriter(engine)
    writer.start()
    return writer


@pytest.fixture
def engine(backend_url: str) -> Iterator[Engine]:
    engine = make_engine(backend_url)
    yield engine
    engine.dispose()


def _insert(connection: Connection, number: int) -> int:
    return records.insert_pending(
        connection, sha256=f"{number:064x}", filename=f"{number}.jpg", inbox_path=f"{number}.jpg", size_bytes=1, hash_ms=1.0
    )


def _rename_then_fail(connection: Connection, image_id: int) -> None:
    connection.execute(update(images).where(images.c.id == image_id).values(filename="renamed.jpg"))
    raise RuntimeError("a bug after the first statement")


def _filenames(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(select(images.c.filename).order_by(images.c.id)).scalars())


@pytest.mark.both_backends
def test_a_transaction_is_all_or_nothing_and_a_statement_is_written_at_once(engine: Engine) -> None:
    writer = _writer(engine)
    try:
        image_id = writer.call_statement(_insert, 1)
        assert _filenames(engine) == ["1.jpg"]  # seen by another connection: committed

        with pytest.raises(RuntimeError, match="a bug after the first statement"):
            writer.call(_rename_then_fail, image_id)
        assert _filenames(engine) == ["1.jpg"]  # rolled back with the error
        # A failed write leaves nothing behind for the next one, in either way of writing.
        with pytest.raises(RuntimeError):
            writer.call_statement(_rename_then_fail, image_id)
        writer.call(_insert, 2)
        writer.call_statement(_insert, 3)
        assert _filenames(engine)[1:] == ["2.jpg", "3.jpg"]
    finally:
        writer.stop()


def test_a_restarted_server_costs_no_failed_write(own_postgres_cluster: ThrowawayCluster) -> None:
    cluster = own_postgres_cluster
    engine = make_engine(cluster.new_database())
    writer = _writer(engine)
    try:
        writer.call(_insert, 1)
        writer.call_statement(_insert, 2)
        assert engine.pool._pre_ping is False  # noqa: SLF001 - the writer meets closed connections itself
        # Both the pool's connection and the writer's own are now closed by the server.
        cluster.pause()
        cluster.resume()
        writer.call(_insert, 3)
        writer.call_statement(_insert, 4)
        assert _filenames(engine) == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]

        cluster.pause()
        with pytest.raises(EnvironmentFault, match="database unavailable"):
            writer.call_statement(_insert, 5)
        cluster.resume()
        writer.call_statement(_insert, 5)
        assert _filenames(engine)[-1] == "5.jpg"
    finally:
        writer.stop()
        engine.dispose()
