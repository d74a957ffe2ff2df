"""The queue's statements on a real database, SQLite and PostgreSQL: who gets which image, what
a lost claim may still write, and that the totals the triggers keep stay exact through it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import Engine, func, select

from daemon.database import records, work_queue
from daemon.database.work_queue import CAPTION, PREPARE
from daemon.database.writer import DatabaseWriter
from models.tables import Image, ImageTotals

pytestmark = pytest.mark.both_backends

images = Image.__table__
DONE = {"status": "done", "processed_at": datetime(2026, 12, 2), "processing_ms": 12.5, "thumbnails_ms": 3.0}


@pytest.fixture
def writer(engine: Engine) -> Iterator[DatabaseWriter]:
    writer = DatabaseWriter(engine)
    writer.start()
    yield writer
    writer.stop()


def _pending(writer: DatabaseWriter, count: int) -> list[int]:
    return [
        writer.call(
            records.insert_pending, sha256=f"{number:064x}", filename=f"{number}.jpg", inbox_path=f"{number}.jpg", size_bytes=10, hash_ms=1.0
        )
        for number in range(count)
    ]


def _worker(writer: DatabaseWriter, pid: int) -> int:
    return writer.call(work_queue.register_worker, host="test", pid=pid, roles="thumbnails", started_at=records.utcnow())


def _rows(engine: Engine) -> dict[int, tuple]:
    with engine.connect() as connection:
        found = connection.execute(select(images.c.id, images.c.status, images.c.claimed_by, images.c.attempts)).all()
    return {row.id: tuple(row[1:]) for row in found}


def test_claims_take_the_oldest_pending_images_once_each(writer: DatabaseWriter, engine: Engine) -> None:
    ids = _pending(writer, 5)
    first, second = _worker(writer, 1), _worker(writer, 2)

    taken = writer.call_statement(work_queue.claim, first, stage=PREPARE, limit=2, lease_s=60)
    assert [claim.image.id for claim in taken] == ids[:2]
    assert [claim.image.filename for claim in taken] == ["0.jpg", "1.jpg"]
    taken = writer.call_statement(work_queue.claim, second, stage=PREPARE, limit=8, lease_s=60)
    assert [claim.image.id for claim in taken] == ids[2:]
    assert writer.call_statement(work_queue.claim, first, stage=PREPARE, limit=8, lease_s=60) == []
    assert writer.call_statement(work_queue.claim, first, stage=CAPTION, limit=8, lease_s=60) == []
    rows = _rows(engine)
    assert [rows[image_id][:2] for image_id in ids] == [("processing", first)] * 2 + [("processing", second)] * 3


def test_only_the_holder_of_a_claim_records_its_outcome(writer: DatabaseWriter, engine: Engine) -> None:
    (image_id,) = _pending(writer, 1)
    holder, other = _worker(writer, 1), _worker(writer, 2)
    writer.call_statement(work_queue.claim, holder, stage=PREPARE, limit=1, lease_s=60)

    assert writer.call_statement(work_queue.finish, other, image_id, DONE) is False
    assert writer.call_statement(work_queue.drop, other, image_id) is False
    assert writer.call_statement(work_queue.release, other, [image_id]) == 0
    assert _rows(engine)[image_id] == ("processing", holder, 0)  # the other worker's writes changed nothing
    assert writer.call_statement(work_queue.renew, holder, [image_id], lease_s=60) == 1
    assert writer.call_statement(work_queue.finish, holder, image_id, DONE) is True
    assert _rows(engine)[image_id] == ("done", None, 0)
    assert writer.call_statement(work_queue.finish, holder, image_id, DONE) is False  # the claim ended with it


def test_a_claim_whose_lease_ran_out_is_requeued_then_failed_and_its_holder_writes_nothing(
    writer: DatabaseWriter, engine: Engine
) -> None:
    (image_id,) = _pending(writer, 1)
    stalled, later = _worker(writer, 1), _worker(writer, 2)
    writer.call_statement(work_queue.claim, stalled, stage=PREPARE, limit=1, lease_s=0)

    assert writer.call(work_queue.requeue_lost, max_attempts=2) == (1, 0)
    assert _rows(engine)[image_id] == ("pending", None, 1)
    assert writer.call_statement(work_queue.finish, stalled, image_id, DONE) is False

    writer.call_statement(work_queue.claim, later, stage=PREPARE, limit=1, lease_s=0)
    assert writer.call(work_queue.requeue_lost, max_attempts=2) == (0, 1)
    assert _rows(engine)[image_id] == ("failed", None, 2)
    with engine.connect() as connection:
        error = connection.execute(select(images.c.error).where(images.c.id == image_id)).scalar_one()
    assert "stopped before it finished (2 tries)" in error


def test_a_released_claim_is_pending_again_without_an_attempt(writer: DatabaseWriter, engine: Engine) -> None:
    ids = _pending(writer, 2)
    worker = _worker(writer, 1)
    writer.call_statement(work_queue.claim, worker, stage=PREPARE, limit=2, lease_s=60)

    assert writer.call_statement(work_queue.release, worker, ids, {"inbox_path": None, "stored_path": "originals/x.jpg"}) == 2
    assert [_rows(engine)[image_id] for image_id in ids] == [("pending", None, 0)] * 2
    retaken = writer.call_statement(work_queue.claim, worker, stage=PREPARE, limit=2, lease_s=60)
    assert [(claim.image.id, claim.image.stored_path) for claim in retaken] == [(image_id, "originals/x.jpg") for image_id in ids]


def test_a_hand_over_is_claimed_by_the_caption_stage_only(writer: DatabaseWriter) -> None:
    (image_id,) = _pending(writer, 1)
    thumbnails, captions = _worker(writer, 1), _worker(writer, 2)
    writer.call_statement(work_queue.claim, thumbnails, stage=PREPARE, limit=1, lease_s=60)
    handed_over = {"status": "done", "stage": CAPTION, "processing_ms": 40.0}
    assert writer.call_statement(work_queue.finish, thumbnails, image_id, handed_over)

    assert writer.call_statement(work_queue.claim, thumbnails, stage=PREPARE, limit=8, lease_s=60) == []
    (claim,) = writer.call_statement(work_queue.claim, captions, stage=CAPTION, limit=8, lease_s=60)
    assert (claim.image.id, claim.stage, claim.processing_ms) == (image_id, CAPTION, 40.0)


def test_a_caption_claim_given_back_or_lost_is_done_again_with_its_caption_to_come(writer: DatabaseWriter, engine: Engine) -> None:
    (image_id,) = _pending(writer, 1)
    worker = _worker(writer, 1)
    writer.call_statement(work_queue.claim, worker, stage=PREPARE, limit=1, lease_s=60)
    writer.call_statement(work_queue.finish, worker, image_id, {"status": "done", "stage": CAPTION})

    def row() -> tuple:
        with engine.connect() as connection:
            found = connection.execute(
                select(images.c.status, images.c.stage, images.c.attempts, images.c.caption_error).where(images.c.id == image_id)
            ).one()
        return tuple(found)

    writer.call_statement(work_queue.claim, worker, stage=CAPTION, limit=1, lease_s=60)
    assert row()[:2] == ("processing", CAPTION)
    assert writer.call_statement(work_queue.release, worker, [image_id]) == 1
    assert row() == ("done", CAPTION, 0, None)

    for attempt in (1, 2):  # the worker dies with it each time
        writer.call_statement(work_queue.claim, worker, stage=CAPTION, limit=1, lease_s=60)
        writer.call_statement(work_queue.requeue_lost, max_attempts=2, dead_workers=[worker])
    status, stage, attempts, caption_error = row()
    assert (status, stage, attempts) == ("done", None, 2), "given up on: done without its caption, not failed"
    assert caption_error == "every worker that captioned this image stopped before it finished (2 tries)"


def test_the_totals_stay_those_of_the_images_through_claims_and_outcomes(writer: DatabaseWriter, engine: Engine) -> None:
    ids = _pending(writer, 6)
    worker = _worker(writer, 1)
    for claim in writer.call_statement(work_queue.claim, worker, stage=PREPARE, limit=4, lease_s=60):
        values = DONE if claim.image.id % 2 else {"status": "failed", "error": "corrupt", "error_kind": "corrupt"}
        writer.call_statement(work_queue.finish, worker, claim.image.id, values)
    writer.call_statement(work_queue.claim, worker, stage=PREPARE, limit=1, lease_s=60)
    writer.call_statement(work_queue.drop, worker, ids[4])

    totals = ImageTotals.__table__
    with engine.connect() as connection:
        kept = dict(connection.execute(select(totals.c.status, totals.c.images).where(totals.c.images > 0)).all())
        sums = dict(connection.execute(select(totals.c.status, totals.c.s_processing)).all())
        counted = dict(connection.execute(select(images.c.status, func.count()).group_by(images.c.status)).all())
    assert kept == counted == {"done": 2, "failed": 2, "pending": 1}
    assert sums["done"] == pytest.approx(25.0)


def test_renew_extends_only_the_claims_named_and_held(writer: DatabaseWriter, engine: Engine) -> None:
    ids = _pending(writer, 3)
    holder = _worker(writer, 1)
    writer.call_statement(work_queue.claim, holder, stage=PREPARE, limit=3, lease_s=0)
    assert writer.call_statement(work_queue.renew, holder, ids[:2], lease_s=60) == 2
    # The one not named lapses: another process's requeue takes it back, the renewed stay.
    assert writer.call(work_queue.requeue_lost, max_attempts=3) == (1, 0)
    rows = _rows(engine)
    assert [rows[image_id][:2] for image_id in ids] == [("processing", holder)] * 2 + [("pending", None)]
    assert sorted(writer.call_statement(work_queue.claimed_by, holder)) == ids[:2]


def test_lapsed_leases_are_left_alone_right_after_an_outage(writer: DatabaseWriter, engine: Engine) -> None:
    (image_id,) = _pending(writer, 1)
    holder = _worker(writer, 1)
    writer.call_statement(work_queue.claim, holder, stage=PREPARE, limit=1, lease_s=0)
    assert writer.call(work_queue.requeue_lost, max_attempts=3, lapsed=False) == (0, 0)
    assert _rows(engine)[image_id] == ("processing", holder, 0)
    # Its holder renews it once it reaches the database again: no attempt counted.
    assert writer.call_statement(work_queue.renew, holder, [image_id], lease_s=60) == 1
    assert writer.call(work_queue.requeue_lost, max_attempts=3) == (0, 0)


def test_orphaned_claims_of_a_worker_are_requeued_with_the_attempt_counted(writer: DatabaseWriter, engine: Engine) -> None:
    ids = _pending(writer, 2)
    holder, other = _worker(writer, 1), _worker(writer, 2)
    writer.call_statement(work_queue.claim, holder, stage=PREPARE, limit=2, lease_s=60)
    assert writer.call(work_queue.requeue_orphans, other, ids, max_attempts=3) == (0, 0)  # not the other's
    assert writer.call(work_queue.requeue_orphans, holder, ids[:1], max_attempts=3) == (1, 0)
    rows = _rows(engine)
    assert rows[ids[0]] == ("pending", None, 1)
    assert rows[ids[1]] == ("processing", holder, 0)
