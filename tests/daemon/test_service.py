"""The daemon's bookkeeping: duplicates, limits, recovery after a crash, the start-up state."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select

import daemon.roles.pipeline_worker as pipeline_worker_module
import models.store as store_module
from daemon.database import records, work_queue
from daemon.inbox.files import hash_file
from daemon.service import Daemon
from daemon.database.writer import DatabaseWriter
from models import migrate
from models.config import Config
from models.db import make_engine
from models.names import display_name, stored_name
from models.tables import DaemonState
from tests.daemon.inbox.test_watcher import distinct_jpeg
from tests.helpers import CORPUS_DIR, copy_in, finished, read_images, wait_for

pytestmark = pytest.mark.both_backends


def _finished(config: Config, count: int):
    return lambda: (rows := read_images(config)) and len(finished(rows)) == count and rows


def test_same_bytes_twice_give_one_record_and_the_copy_leaves_the_inbox(config: Config, start_daemon, caplog) -> None:
    caplog.set_level(logging.INFO, logger="htx.daemon")
    daemon = start_daemon(config)
    copy_in(CORPUS_DIR / "flower.jpg", config.inbox_dir / "first.jpg")
    wait_for(_finished(config, 1), what="the first copy")
    copy_in(CORPUS_DIR / "flower.jpg", config.inbox_dir / "again" / "second.jpg")
    copy_in(CORPUS_DIR / "empty.jpg", config.inbox_dir / "broken-1.jpg")
    copy_in(CORPUS_DIR / "empty.jpg", config.inbox_dir / "broken-2.jpg")  # a failed file's twin
    wait_for(lambda: not (config.inbox_dir / "again" / "second.jpg").exists(), what="the duplicate to go")
    rows = wait_for(_finished(config, 2), what="the empty file")
    wait_for(lambda: not list(config.inbox_dir.rglob("*.jpg")), what="the empty file's twin to go")
    assert daemon.wait_idle(timeout=10)
    assert sorted(row["filename"] for row in rows) in (
        ["broken-1.jpg", "first.jpg"],
        ["broken-2.jpg", "first.jpg"],
    )
    assert sorted(path.name for path in config.inbox_dir.rglob("*") if path.is_file()) == []
    assert "duplicate: again/second.jpg has the same bytes as image 1" in caplog.text


def test_file_size_limit_fails_the_file_without_decoding(make_config, start_daemon) -> None:
    config = make_config(pipeline={"max_file_bytes": 10_000})
    start_daemon(config)
    copy_in(CORPUS_DIR / "flower.jpg", config.inbox_dir / "big.jpg")  # 32 KB
    copy_in(CORPUS_DIR / "hopper.jpg", config.inbox_dir / "small.jpg")  # 6 KB
    rows = {row["filename"]: row for row in wait_for(_finished(config, 2), what="both files")}
    assert rows["big.jpg"]["status"] == "failed"
    assert rows["big.jpg"]["error_kind"] == "too_large"
    assert "pipeline.max_file_bytes" in rows["big.jpg"]["error"]
    assert rows["big.jpg"]["width"] is None  # never decoded
    assert rows["small.jpg"]["status"] == "done"


def test_pixel_limit_fails_the_file(make_config, start_daemon) -> None:
    config = make_config(pipeline={"max_pixels": 100_000})
    start_daemon(config)
    copy_in(CORPUS_DIR / "xmp_test.jpg", config.inbox_dir / "wide.jpg")  # 2.1 megapixels
    rows = wait_for(_finished(config, 1), what="the large image")
    assert (rows[0]["status"], rows[0]["error_kind"]) == ("failed", "too_large")
    assert "2,144,000 pixels" in rows[0]["error"]  # 2000 x 1072


def test_done_record_has_every_field_and_the_original_is_stored(config: Config, start_daemon) -> None:
    daemon = start_daemon(config)
    copy_in(CORPUS_DIR / "flower.jpg", config.inbox_dir / "flower.jpg")
    row = wait_for(_finished(config, 1), what="the image")[0]
    assert daemon.wait_idle(timeout=10)  # the original moves just after the row is committed
    assert row["status"] == "done" and row["error"] is None
    assert (row["format"], row["width"], row["height"], row["mode"]) == ("JPEG", 480, 360, "RGB")
    assert row["size_bytes"] == (CORPUS_DIR / "flower.jpg").stat().st_size
    assert row["camera_make"] == "Canon" and row["taken_at"] == "2003-12-14T12:01:44"
    assert row["caption"] is None and row["caption_error"] is None
    for stage in ("hash_ms", "metadata_ms", "thumbnails_ms", "processing_ms"):
        assert row[stage] is not None and row[stage] >= 0, stage
    assert row["processing_ms"] >= row["metadata_ms"] + row["thumbnails_ms"]
    stored = config.data_dir / row["stored_path"]
    assert stored == (config.data_dir / "originals") / row["sha256"][:2] / f"{row['sha256']}.jpg"
    assert stored.read_bytes() == (CORPUS_DIR / "flower.jpg").read_bytes()
    assert row["processed_at"] >= row["received_at"]


def test_failed_file_moves_to_failed_with_its_reason(config: Config, start_daemon) -> None:
    daemon = start_daemon(config)
    copy_in(CORPUS_DIR / "hopper.gif", config.inbox_dir / "a.gif")
    copy_in(CORPUS_DIR / "uber.gif", config.inbox_dir / "sub" / "a.gif")  # same name, other bytes
    rows = wait_for(_finished(config, 2), what="both GIFs")
    assert daemon.wait_idle(timeout=10)
    stored = sorted(row["stored_path"] for row in rows)
    assert len(set(stored)) == 2 and all(path.startswith("failed/") for path in stored)
    for row in rows:
        kept = config.data_dir / row["stored_path"]
        assert kept.is_file()
        assert kept.with_name(kept.name + ".error.txt").read_text().strip().endswith(row["error"])
        assert row["error"] == "unsupported format: GIF (only JPEG and PNG are accepted)"


def test_heartbeat_names_the_captioner(config: Config, start_daemon) -> None:
    start_daemon(config)
    engine = make_engine(config.database_url, readonly=True)
    with engine.connect() as connection:
        state = connection.execute(select(DaemonState.__table__)).one()
    engine.dispose()
    assert state.pid > 0 and state.heartbeat_at >= state.started_at
    assert (state.caption_model, state.caption_device, state.caption_runtime) == (None, None, None)


@contextmanager
def _prepared_writer(config: Config) -> Iterator[DatabaseWriter]:
    """A writer on the daemon's database, for rows a crash would have left; closed after."""
    engine = make_engine(config.database_url)
    migrate.upgrade(engine)
    writer = DatabaseWriter(engine)
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()
        engine.dispose()


# The second: a name from a Latin-1 client, which is no UTF-8 text, as the database keeps it.
@pytest.mark.parametrize("name", ["interrupted.jpg", os.fsdecode(b"caf\xe9.jpg")])
def test_restart_after_a_crash_mid_processing_finishes_the_image(config: Config, start_daemon, name: str) -> None:
    # The state a kill -9 leaves: the row claimed by a worker of this machine that no longer
    # runs, its lease run out meanwhile, the file still in the inbox.
    config.inbox_dir.mkdir(parents=True)
    shutil.copyfile(CORPUS_DIR / "flower.jpg", config.inbox_dir / name)
    digest = hash_file(config.inbox_dir / name, config.pipeline.max_file_bytes)
    with _prepared_writer(config) as writer:
        image_id = writer.call(
            records.insert_pending,
            sha256=digest.sha256,
            filename=display_name(name, keep_folders=True),
            inbox_path=stored_name(name),
            size_bytes=digest.size_bytes,
            hash_ms=1.0,
        )
        dead = writer.call(
            work_queue.register_worker, host=socket.gethostname(), pid=_dead_pid(), roles="thumbnails", started_at=records.utcnow()
        )
        assert [claim.image.id for claim in writer.call(work_queue.claim_ids, dead, [image_id], lease_s=0)] == [image_id]

    daemon = start_daemon(config)
    rows = wait_for(_finished(config, 1), what="the interrupted image")
    assert [(row["id"], row["status"], row["attempts"]) for row in rows] == [(image_id, "done", 1)]
    assert daemon.wait_idle(timeout=10)  # the original leaves the inbox just after `done` is committed
    assert list(config.inbox_dir.iterdir()) == []


def _dead_pid() -> int:
    """The pid of a process that has exited (and been waited for)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_restart_after_a_crash_between_commit_and_move_moves_the_file(config: Config, start_daemon) -> None:
    daemon = start_daemon(config)
    copy_in(CORPUS_DIR / "hopper.jpg", config.inbox_dir / "h.jpg")
    row = wait_for(_finished(config, 1), what="the image")[0]
    daemon.stop()
    # As if the daemon died after committing `done` but before moving the original.
    stored = config.data_dir / row["stored_path"]
    stored.rename(config.inbox_dir / "h.jpg")

    restarted = start_daemon(config)
    wait_for(stored.exists, what="the original to reach the store")
    assert restarted.wait_idle(timeout=10)
    assert list(config.inbox_dir.iterdir()) == []
    assert [(r["id"], r["status"]) for r in read_images(config)] == [(row["id"], "done")]


def test_pending_row_whose_file_vanished_is_failed_not_left_pending(config: Config, start_daemon) -> None:
    with _prepared_writer(config) as writer:
        image_id = writer.call(
            records.insert_pending,
            sha256="0" * 64,
            filename="gone.jpg",
            inbox_path="gone.jpg",
            size_bytes=10,
            hash_ms=1.0,
        )
    start_daemon(config)
    rows = wait_for(_finished(config, 1), what="the row of the vanished file")
    assert [(row["id"], row["status"], row["error_kind"]) for row in rows] == [(image_id, "failed", "missing")]


def test_once_mode_processes_the_inbox_and_reports_idle(config: Config) -> None:
    config.inbox_dir.mkdir(parents=True)
    for number in range(5):
        (config.inbox_dir / f"{number}.jpg").write_bytes(distinct_jpeg(number))
    daemon = Daemon(config, observe=False)
    daemon.start()
    try:
        assert daemon.wait_idle(timeout=30)
    finally:
        daemon.stop()
    assert [row["status"] for row in read_images(config)] == ["done"] * 5


def test_a_new_file_under_the_name_just_vacated_is_still_taken(config: Config, start_daemon, monkeypatch) -> None:
    """An upload renamed in as the previous file of that name leaves: another arrival, not the same."""
    staging = config.data_dir / "staging"
    staging.mkdir(parents=True)
    shutil.copyfile(CORPUS_DIR / "hopper.png", staging / "photo.jpg")
    real_move = store_module.move_file
    swapped = []

    def move_then_new_arrival(source, destination):
        real_move(source, destination)
        if not swapped and source.name == "photo.jpg":
            swapped.append(True)
            (staging / "photo.jpg").rename(source)  # before the first job has let go of the name

    monkeypatch.setattr(store_module, "move_file", move_then_new_arrival)
    start_daemon(config)
    copy_in(CORPUS_DIR / "hopper.jpg", config.inbox_dir / "photo.jpg")
    rows = wait_for(_finished(config, 2), what="both files called photo.jpg")
    assert [row["format"] for row in rows] == ["JPEG", "PNG"]
    assert swapped


def test_a_file_rewritten_while_processed_makes_one_record_of_its_new_bytes(config: Config, start_daemon, monkeypatch) -> None:
    real_prepare = pipeline_worker_module.prepare
    rewritten = []

    def prepare_then_rewrite(source, **kwargs):
        prepared = real_prepare(source, **kwargs)
        if not rewritten:
            rewritten.append(True)
            with open(source, "r+b") as handle:  # same inode, other bytes
                handle.truncate(0)
                handle.write((CORPUS_DIR / "hopper.png").read_bytes())
        return prepared

    monkeypatch.setattr(pipeline_worker_module, "prepare", prepare_then_rewrite)
    daemon = start_daemon(config)
    copy_in(CORPUS_DIR / "hopper.jpg", config.inbox_dir / "photo.jpg")
    rows = wait_for(_finished(config, 1), what="the new version to be done")
    assert daemon.wait_idle(timeout=10)
    rows = read_images(config)
    assert [(row["status"], row["format"], row["filename"]) for row in rows] == [("done", "PNG", "photo.jpg")]
    # Nothing is kept under the first version's hash: those bytes are gone.
    first_sha = hashlib.sha256((CORPUS_DIR / "hopper.jpg").read_bytes()).hexdigest()
    assert not list((config.data_dir / "originals").rglob(f"{first_sha}*"))
    assert not list((config.data_dir / "thumbnails").rglob(f"{first_sha}*"))


def test_a_daemon_connected_as_a_superuser_warns_once_and_one_of_its_own_does_not(
    postgres_cluster, make_config, start_daemon, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="htx.daemon")
    as_superuser = postgres_cluster.new_database().replace("://htx@", "://postgres@")
    start_daemon(make_config(database={"url": as_superuser}))
    warned = [record.getMessage() for record in caplog.records if "a superuser" in record.getMessage()]
    assert warned == [
        "connected to PostgreSQL as postgres, a superuser: HTX's connections can take the slots the server keeps "
        "for administrators, and an admin's psql is then refused; connect as a role of its own (README: PostgreSQL)"
    ]
    caplog.clear()
    start_daemon(make_config(database={"url": postgres_cluster.new_database()}, paths={"data_dir": "other"}))
    assert not [record for record in caplog.records if "a superuser" in record.getMessage()]
