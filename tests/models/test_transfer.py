"""`htx db copy --to URL`: a SQLite install moved to PostgreSQL keeps every record and count."""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, insert, select

from daemon.database import records
from daemon.cli import main
from models import embedding_reads, image_reads, migrate, stats_reads, transfer
from models.config import Config
from models.db import make_engine
from models.tables import Image, ImageEmbedding
from tests.api.conftest import ingest
from tests.helpers import read_images, write_config_file
from tests.postgres import ThrowawayCluster

images = Image.__table__
SYNTHETIC = 300
NOW = datetime(2026, 12, 1, 12, 0)


def _synthetic_rows(first_number: int) -> list[dict]:
    rng = random.Random(7)
    rows = []
    for number in range(first_number, first_number + SYNTHETIC):
        status = rng.choice(["done", "done", "done", "failed", "pending"])
        done = status == "done"
        rows.append({
            "sha256": f"{number:064x}", "filename": f"2026/trip/IMG_{number:04}.jpg", "status": status,
            "received_at": NOW - timedelta(minutes=number), "processed_at": NOW - timedelta(seconds=number) if status != "pending" else None,
            "size_bytes": rng.randint(1, 6 << 30), "format": "JPEG" if done else None,
            "width": 4000 if done else None, "height": 3000 if done else None,
            "exif": {"Make": "Café Cam", "ExifIFD": {"FNumber": 2.8, "ISOSpeedRatings": rng.randint(50, 3200)}} if done else None,
            "caption": rng.choice(["a dog on a beach", "crème brûlée on a plate", None]) if done else None,
            "error": "corrupt image: broken data stream" if status == "failed" else None,
            "error_kind": "corrupt" if status == "failed" else None,
            "processing_ms": rng.uniform(5, 900) if status != "pending" else None,
            "hash_ms": rng.uniform(0.1, 5), "caption_ms": rng.uniform(100, 800) if done else None,
            "gps_latitude": rng.uniform(-90, 90) if done else None,
        })
    return rows


def _records(url: str) -> list[dict]:
    engine = make_engine(url, readonly=True)
    try:
        with engine.connect() as connection:
            return [dict(row) for row in connection.execute(select(images).order_by(images.c.id)).mappings()]
    finally:
        engine.dispose()


def _stats(url: str) -> stats_reads.Stats:
    engine = make_engine(url, readonly=True)
    try:
        with engine.connect() as connection:
            return stats_reads.stats(connection, now=NOW)
    finally:
        engine.dispose()


def test_copy_to_postgresql_keeps_every_record_and_count(
    config: Config, postgres_cluster: ThrowawayCluster, tmp_path: Path, capsys
) -> None:
    ingest(config, ("hopper.jpg", "exif_gps.jpg", "basn6a08.png", "broken.png"))  # rows the daemon made
    engine = make_engine(config.database_url)
    with engine.begin() as connection:
        connection.execute(insert(images), _synthetic_rows(len(read_images(config)) + 1))
    engine.dispose()
    target = postgres_cluster.new_database()
    config_file = write_config_file(config, tmp_path / "htx.toml")

    assert main(["--config", str(config_file), "db", "copy", "--to", target]) == 0
    out = capsys.readouterr().out
    assert f"copied {SYNTHETIC + 4} image(s)" in out and "the counts agree" in out

    source_rows, target_rows = _records(config.database_url), _records(target)
    assert len(target_rows) == SYNTHETIC + 4
    assert target_rows == source_rows  # every column of every record, ids included
    assert _stats(target) == _stats(config.database_url)
    for words in ("creme", "img_01", "hopper"):
        found = []
        for url in (config.database_url, target):
            engine = make_engine(url, readonly=True)
            with engine.connect() as connection:
                found.append([item["id"] for item in image_reads.list_images(connection, limit=500, search=words).items])
            engine.dispose()
        assert found[0] == found[1] and found[0], words

    # The next image the daemon registers on the target gets a new id, past the copied ones.
    engine = make_engine(target)
    with engine.begin() as connection:
        new_id = records.insert_pending(connection, sha256="e" * 64, filename="new.jpg", inbox_path="new.jpg", size_bytes=1, hash_ms=1.0)
    engine.dispose()
    assert new_id > max(row["id"] for row in source_rows)

    # A second copy into the same database is refused, and changes nothing.
    assert main(["--config", str(config_file), "db", "copy", "--to", target]) == 1
    assert "already holds" in capsys.readouterr().err
    assert len(_records(target)) == SYNTHETIC + 5


def test_copy_goes_in_batches_both_ways(postgres_cluster: ThrowawayCluster, tmp_path: Path, monkeypatch) -> None:
    """SQLite to PostgreSQL and back, BATCH_ROWS at a time: the same records, the same counts
    (the PostgreSQL source is read by a reader engine, whose statements autocommit)."""
    monkeypatch.setattr(transfer, "BATCH_ROWS", 70)
    first = f"sqlite:///{tmp_path / 'first.db'}"
    engine = make_engine(first)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(insert(images), _synthetic_rows(1))
        captioned = [row.id for row in connection.execute(select(images.c.id, images.c.caption)) if row.caption][:100]
        vectors = [(image_id, f"{image_id}".encode() * 4) for image_id in captioned]
        connection.execute(
            insert(ImageEmbedding.__table__),
            [{"image_id": image_id, "model": "m", "vector": vector, "embedded_at": datetime(2026, 1, 1)} for image_id, vector in vectors],
        )
    engine.dispose()
    assert len(vectors) > 70  # more than a batch
    middle, last = postgres_cluster.new_database(), f"sqlite:///{tmp_path / 'last.db'}"
    for source_url, target_url in ((first, middle), (middle, last)):
        source, target = make_engine(source_url, readonly=True), make_engine(target_url)
        try:
            before, after = transfer.copy_records(source, target)
        finally:
            source.dispose()
            target.dispose()
        assert before == after and after.images == SYNTHETIC
    assert _records(last) == _records(first)
    assert _stats(last) == _stats(first)
    engine = make_engine(last, readonly=True)
    try:
        with engine.connect() as connection:
            assert {row[1:] for row in embedding_reads.written_since(connection, "m", 0, limit=1000)} == set(vectors)
    finally:
        engine.dispose()


def test_a_copy_that_stops_partway_says_what_it_left(tmp_path: Path, monkeypatch) -> None:
    """The batches committed before a failure stay; the error says so, and how to retry; a
    second copy into the same target is refused."""
    monkeypatch.setattr(transfer, "BATCH_ROWS", 50)
    source_url, target_url = f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'target.db'}"
    engine = make_engine(source_url)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(insert(images), _synthetic_rows(1))
    engine.dispose()
    source, target = make_engine(source_url, readonly=True), make_engine(target_url)
    inserts = []

    @event.listens_for(target, "before_cursor_execute")
    def _fail_third_batch(_connection, _cursor, statement, *_args) -> None:
        if statement.startswith("INSERT INTO images "):
            inserts.append(statement)
            if len(inserts) == 3:
                raise sqlite3.OperationalError("disk I/O error")

    try:
        with pytest.raises(transfer.TransferStopped, match=r"after copying 100 image\(s\) \(disk I/O error\).*drop the target"):
            transfer.copy_records(source, target)
        event.remove(target, "before_cursor_execute", _fail_third_batch)
        assert len(_records(target_url)) == 100
        with pytest.raises(transfer.TransferRefused, match="already holds 100"):
            transfer.copy_records(source, target)
    finally:
        source.dispose()
        target.dispose()


def test_db_migrate_creates_the_schema_on_postgresql(postgres_cluster: ThrowawayCluster, config: Config, tmp_path: Path, capsys) -> None:
    url = postgres_cluster.new_database()
    config_file = write_config_file(config, tmp_path / "htx.toml", extra=f'[database]\nurl = "{url}"\n')
    assert main(["--config", str(config_file), "stats"]) == 1
    assert "htx db migrate" in capsys.readouterr().err
    assert main(["--config", str(config_file), "db", "migrate"]) == 0
    assert migrate.head_revision() in capsys.readouterr().out
    assert main(["--config", str(config_file), "stats"]) == 0
