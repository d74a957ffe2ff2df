"""The embeddings' writes and reads on both databases: what waits, the split among embedders,
a caption that changed while it was embedded, and the triggers of migration 0013."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, insert, text, update

from daemon.database import embeddings, records
from models import embedding_reads, migrate
from models.db import make_engine
from models.tables import DaemonState, Image

pytestmark = pytest.mark.both_backends
MODEL = "test-model"
VECTOR = b"\x00\x3c" * 4  # float16 1.0, four times


@pytest.fixture
def engine(backend_url: str) -> Engine:
    engine = make_engine(backend_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def add_images(engine: Engine, count: int, status: str = "done") -> list[int]:
    now = records.utcnow()
    rows = [
        {"sha256": f"{status[0]}{number:063x}", "filename": f"{number}.jpg", "status": status, "received_at": now, "size_bytes": 1, "caption": f"caption {number}"}
        for number in range(count)
    ]
    with engine.begin() as connection:
        connection.execute(insert(Image.__table__), rows)
        return sorted(connection.execute(text("SELECT id FROM images WHERE status = :status"), {"status": status}).scalars())


def test_done_captioned_images_wait_newest_first_and_parts_split_them_whole(engine: Engine) -> None:
    ids = add_images(engine, 10)
    add_images(engine, 2, status="pending")
    with engine.begin() as connection:
        connection.execute(update(Image.__table__).where(Image.__table__.c.id == ids[0]).values(caption=None))
        waiting = embedding_reads.waiting(connection, MODEL, limit=100)
        assert [image_id for image_id, _ in waiting] == sorted(ids[1:], reverse=True)
        parts = [{image_id for image_id, _ in embedding_reads.waiting(connection, MODEL, limit=100, part=(n, 3))} for n in range(3)]
    assert set().union(*parts) == set(ids[1:]) and sum(map(len, parts)) == 9


def test_a_caption_that_changed_while_it_was_embedded_is_not_stored(engine: Engine) -> None:
    first, second = add_images(engine, 2)
    with engine.begin() as connection:
        batch = embedding_reads.waiting(connection, MODEL, limit=10)
        connection.execute(update(Image.__table__).where(Image.__table__.c.id == first).values(caption="a newer caption"))
    with engine.begin() as connection:
        embeddings.store(connection, MODEL, [(image_id, caption, VECTOR) for image_id, caption in batch])
        assert [row[1] for row in embedding_reads.written_since(connection, MODEL, 0, limit=10)] == [second]
        assert embedding_reads.counts(connection, MODEL) == embedding_reads.EmbeddingCounts(embedded=1, waiting=1)
        assert embedding_reads.waiting(connection, MODEL, limit=10) == [(first, "a newer caption")]


def test_a_new_caption_or_a_delete_removes_the_rows_of_every_model_and_seq_only_grows(engine: Engine) -> None:
    first, second = add_images(engine, 2)
    with engine.begin() as connection:
        embeddings.store(connection, MODEL, [(first, "caption 0", VECTOR), (second, "caption 1", VECTOR)])
        embeddings.store(connection, "other", [(first, "caption 0", VECTOR)])
        last = max(row[0] for row in embedding_reads.written_since(connection, MODEL, 0, limit=10))
    with engine.begin() as connection:
        connection.execute(update(Image.__table__).where(Image.__table__.c.id == first).values(caption="caption 0"))  # the same: kept
        connection.execute(update(Image.__table__).where(Image.__table__.c.id == second).values(caption="a new one"))
        assert {row[1] for row in embedding_reads.written_since(connection, MODEL, 0, limit=10)} == {first}
        connection.execute(text("DELETE FROM images WHERE id = :id"), {"id": first})
        assert embedding_reads.written_since(connection, MODEL, 0, limit=10) == []
        assert embedding_reads.written_since(connection, "other", 0, limit=10) == []
        embeddings.store(connection, MODEL, [(second, "a new one", VECTOR)])
        [(seq, image_id, vector)] = embedding_reads.written_since(connection, MODEL, 0, limit=10)
    assert seq > last and (image_id, vector) == (second, VECTOR)


def test_forgetting_one_model_or_the_others(engine: Engine) -> None:
    [image_id] = add_images(engine, 1)
    with engine.begin() as connection:
        embeddings.store(connection, MODEL, [(image_id, "caption 0", VECTOR)])
        embeddings.store(connection, "old", [(image_id, "caption 0", VECTOR)])
        assert embeddings.forget_other_models(connection, MODEL) == 1
        assert embedding_reads.counts(connection, "old").embedded == 0
        assert embeddings.forget_model(connection, MODEL) == 1
        assert embedding_reads.counts(connection, MODEL) == embedding_reads.EmbeddingCounts(embedded=0, waiting=1)


def test_embedders_are_the_live_processes_with_the_captions_role(engine: Engine) -> None:
    now = records.utcnow()
    state = DaemonState.__table__
    with engine.begin() as connection:
        def worker(roles: str, heartbeat_age_s: float = 0, stopped: bool = False) -> int:
            return connection.execute(
                insert(state).values(
                    host="h", pid=1, roles=roles, started_at=now, heartbeat_at=now - timedelta(seconds=heartbeat_age_s),
                    stopped_at=now if stopped else None,
                ).returning(state.c.id)
            ).scalar_one()

        both = worker("watch thumbnails captions")
        worker("watch thumbnails")
        worker("captions", heartbeat_age_s=60)
        worker("captions", stopped=True)
        gpu = worker("captions")
        assert embeddings.embedders(connection) == [both, gpu]
