"""api.context.Reader on PostgreSQL: no check of a connection before each use, one retry on a
new connection when the server has closed it (a restart), and a quick error while it is down."""

from __future__ import annotations

import time

import anyio
import pytest
from sqlalchemy.exc import DBAPIError

from api.context import Reader
from daemon.database import records
from models import migrate, status_reads
from models.db import make_engine
from tests.postgres import ThrowawayCluster


def test_a_restarted_server_costs_no_failed_read_and_a_stopped_one_fails_fast(own_postgres_cluster: ThrowawayCluster) -> None:
    cluster = own_postgres_cluster
    url = cluster.new_database()
    writer = make_engine(url)
    migrate.upgrade(writer)
    writer.dispose()
    engine = make_engine(url, readonly=True)
    reader = Reader(engine)
    head = migrate.head_revision()

    def read() -> str | None:
        return anyio.run(lambda: reader.run(status_reads.schema_revision))

    try:
        assert engine.pool._pre_ping is False  # noqa: SLF001 - what this test is about
        assert read() == head
        # The pool's connection is now closed by the server: the read retries on a new one.
        cluster.pause()
        cluster.resume()
        assert read() == head
        assert read() == head

        cluster.pause()
        for _ in range(2):  # the stale connection, then none at all: an error each time, quickly
            started = time.monotonic()
            with pytest.raises(DBAPIError):
                read()
            assert time.monotonic() - started < 3
        cluster.resume()
        assert read() == head
    finally:
        reader.close()
        engine.dispose()


def test_concurrent_callers_share_a_version_read_started_after_they_came(
    postgres_cluster: ThrowawayCluster, monkeypatch
) -> None:
    url = postgres_cluster.new_database()
    writer = make_engine(url)
    migrate.upgrade(writer)
    engine = make_engine(url, readonly=True)
    reader = Reader(engine)
    reads = []
    real = status_reads.data_version

    def counted(connection):
        reads.append(1)
        return real(connection)

    monkeypatch.setattr(status_reads, "data_version", counted)

    async def many() -> list:
        found = []

        async def one() -> None:
            found.append(await reader.data_version())

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(one)
        return found

    try:
        found = anyio.run(many)
        assert len(found) == 20 and len(set(found)) == 1
        assert 1 <= len(reads) <= 2  # the first caller's read, and one for all who came during it
        before = anyio.run(reader.data_version)
        with writer.begin() as connection:
            records.insert_pending(connection, sha256="a" * 64, filename="a.jpg", inbox_path="a.jpg", size_bytes=1, hash_ms=1.0)
        assert anyio.run(reader.data_version) != before
    finally:
        reader.close()
        engine.dispose()
        writer.dispose()
