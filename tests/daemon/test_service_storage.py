"""The daemon and the API on both stores, the data folder and an S3 bucket (a real SeaweedFS):
the same records, every object under its key with the bytes of its record, the same answers
from the API (ETag and cache headers, originals, delete into the trash, process again), and on
an object store nothing of the images kept in the local data folder."""

from __future__ import annotations

import hashlib
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models import migrate
from models.config import Config
from models.db import make_engine
from daemon.database import records
from models.store import PARTS, Store, note_key, original_key, thumbnail_key
from models.stores import open_store
from tests.api.conftest import serve
from tests.conftest import s3_storage
from tests.helpers import CORPUS_DIR, copy_in, finished, read_images, wait_for

GOOD = ("flower.jpg", "basn6a08.png", "Landscape_6.jpg")
BROKEN = ("empty.jpg", "broken.png")


def _sha256(store: Store, key: str) -> str:
    with store.open(key) as stored:
        return hashlib.sha256(stored.reader.read()).hexdigest()


def _keys(store: Store) -> set[str]:
    return {listed.key for part in PARTS for listed in store.scan(f"{part}/")}


def _files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


@pytest.fixture
def store_config(make_config: Callable[..., Config], storage_section: dict[str, Any]) -> Config:
    return make_config(storage=storage_section, paths={"data_dir": "data", "trash": "trash"})


def _settled(config: Config, count: int) -> Callable[[], list[dict[str, Any]] | None]:
    def check() -> list[dict[str, Any]] | None:
        rows = read_images(config)
        return rows if len(finished(rows)) == count else None

    return check


def test_every_record_has_its_objects_and_an_object_store_leaves_nothing_local(store_config: Config, start_daemon) -> None:
    config = store_config
    store = open_store(config)
    daemon = start_daemon(config)
    for name in GOOD + BROKEN:
        copy_in(CORPUS_DIR / name, config.inbox_dir / name)
    rows = wait_for(_settled(config, len(GOOD) + len(BROKEN)), timeout=60, what="every file to be settled")
    assert daemon.wait_idle(timeout=10)

    expected = set()
    for row in rows:
        assert _sha256(store, row["stored_path"]) == row["sha256"], row["filename"]
        expected.add(row["stored_path"])
        if row["status"] == "done":
            assert row["stored_path"].startswith("originals/")
            for size in ("small", "medium"):
                assert store.exists(row[f"thumb_{size}_path"])
                expected.add(row[f"thumb_{size}_path"])
        else:
            assert row["stored_path"].startswith("failed/")
            with store.open(note_key(row["stored_path"])) as note:
                assert row["sha256"] in note.reader.read().decode()
            expected.add(note_key(row["stored_path"]))
    assert {row["status"] for row in rows if row["filename"] in GOOD} == {"done"}
    assert {row["status"] for row in rows if row["filename"] in BROKEN} == {"failed"}
    # Nothing besides: no object a crash-free run leaves behind (an incoming copy, a second note).
    assert _keys(store) == expected
    assert not _files_under(config.inbox_dir)
    if store.remote:
        for part in ("originals", "thumbnails", "failed"):
            assert not _files_under(config.data_dir / part), part
        assert not _files_under(config.work_dir)


def test_the_api_serves_deletes_and_reprocesses_the_same_on_both_stores(store_config: Config, start_daemon) -> None:
    config = store_config
    store = open_store(config)
    start_daemon(config)
    copy_in(CORPUS_DIR / "flower.jpg", config.inbox_dir / "flower.jpg")
    copy_in(CORPUS_DIR / "basn6a08.png", config.inbox_dir / "basn6a08.png")
    rows = wait_for(_settled(config, 2), timeout=60, what="both files")
    flower = next(row for row in rows if row["filename"] == "flower.jpg")
    other = next(row for row in rows if row["filename"] == "basn6a08.png")

    with serve(config) as client:
        thumbnail = client.get(f"/api/images/{flower['id']}/thumbnails/small")
        assert thumbnail.status_code == 200
        assert thumbnail.headers["content-type"] == "image/jpeg"
        assert thumbnail.headers["cache-control"] == "public, max-age=31536000, immutable"
        etag = thumbnail.headers["etag"]
        assert etag.startswith(f'"{flower["sha256"][:16]}-small-')
        assert client.get(f"/api/images/{flower['id']}/thumbnails/small", headers={"If-None-Match": etag}).status_code == 304

        original = client.get(f"/api/images/{flower['id']}/original")
        assert original.status_code == 200
        assert original.content == (CORPUS_DIR / "flower.jpg").read_bytes()
        assert original.headers["etag"] == f'"{flower["sha256"]}"'
        assert original.headers["content-disposition"] == 'attachment; filename="flower.jpg"'

        assert client.post(f"/api/images/{other['id']}/reprocess").status_code == 202
        wait_for(lambda: next(r for r in read_images(config) if r["id"] == other["id"])["processed_at"] != other["processed_at"]
                 and finished([next(r for r in read_images(config) if r["id"] == other["id"])]),
                 timeout=30, what="the image processed again")
        assert _sha256(store, other["stored_path"]) == other["sha256"]

        assert client.delete(f"/api/images/{flower['id']}").status_code == 204
    assert (config.trash_dir / f"{flower['id']}-{Path(flower['stored_path']).name}").read_bytes() == (CORPUS_DIR / "flower.jpg").read_bytes()
    assert not any(store.exists(key) for key in (flower["stored_path"], flower["thumb_small_path"], flower["thumb_medium_path"]))
    assert store.exists(other["thumb_small_path"])


def test_a_bucket_that_is_not_there_is_the_servers_fault(make_config: Callable[..., Config], object_store_server, tmp_path: Path) -> None:
    storage = s3_storage(object_store_server, tmp_path.name)
    storage["s3"]["bucket"] = "no-such-bucket"
    config = make_config(storage=storage, paths={"data_dir": "data", "trash": "trash"})
    engine = make_engine(config.database_url)
    migrate.upgrade(engine)
    sha = "ab" * 32
    with engine.begin() as connection:
        image_id = records.insert_pending(connection, sha256=sha, filename="a.jpg", inbox_path=None, size_bytes=4, hash_ms=1.0)
        records.update_image(connection, image_id, {
            "status": "done", "stored_path": original_key(sha, "jpg"), "format": "JPEG",
            "thumb_small_path": thumbnail_key(sha, "small", "jpg"), "thumb_medium_path": thumbnail_key(sha, "medium", "jpg"),
        })
    engine.dispose()
    with serve(config) as client:
        # Every answer that needs the store says it is the server's fault, and changes nothing.
        for method, path in (("GET", "thumbnails/small"), ("GET", "original"), ("POST", "reprocess"), ("DELETE", "")):
            answer = client.request(method, f"/api/images/{image_id}/{path}".rstrip("/"))
            assert answer.status_code == 503, (method, path, answer.text)
            assert answer.json() == {"error": "The image store cannot be reached: try again later."}
        assert [row["status"] for row in read_images(config)] == ["done"]
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["problem"] == "bucket missing"
        upload = client.post("/api/images", files={"file": ("a.jpg", (CORPUS_DIR / "flower.jpg").read_bytes(), "image/jpeg")})
        assert upload.status_code == 503
        assert "bucket missing" in upload.json()["error"]
        assert object_store_server.endpoint not in upload.text
    assert not _files_under(config.inbox_dir)


def test_captions_and_recaptions_read_the_original_from_the_bucket(
    make_config: Callable[..., Config], object_store_server, tiny_blip: Path, start_daemon, tmp_path: Path
) -> None:
    caption = {"model": str(tiny_blip), "max_new_tokens": 5, "batch_size": 2, "batch_wait_ms": 50}
    config = make_config(storage=s3_storage(object_store_server, tmp_path.name), caption=caption)
    daemon = start_daemon(config)
    copy_in(CORPUS_DIR / "flower.jpg", config.inbox_dir / "flower.jpg")
    (row,) = wait_for(_settled(config, 1), timeout=120, what="the captioned image")
    assert row["status"] == "done" and row["caption"] and row["caption_error"] is None
    with serve(config) as client:
        assert client.post(f"/api/images/{row['id']}/recaption").status_code == 202
    # The caption stage claims it from the queue and fetches its original from the bucket.
    again = wait_for(lambda: next((r for r in read_images(config) if r["stage"] is None and r["processed_at"] != row["processed_at"]), None),
                     timeout=60, what="the caption made again")
    assert again["caption"] and again["caption_error"] is None
    assert daemon.wait_idle(timeout=10)
    assert not _files_under(config.work_dir)  # the fetched copies are gone


def test_a_presigned_redirect_reads_the_object_itself(make_config: Callable[..., Config], object_store_server, start_daemon, tmp_path: Path) -> None:
    storage = s3_storage(object_store_server, tmp_path.name)
    storage["s3"]["presign_s"] = 60
    config = make_config(storage=storage)
    start_daemon(config)
    copy_in(CORPUS_DIR / "flower.jpg", config.inbox_dir / "flower.jpg")
    (row,) = wait_for(_settled(config, 1), timeout=60, what="the image")
    with serve(config) as client:
        for path, key in (("original", row["stored_path"]), ("thumbnails/small", row["thumb_small_path"])):
            answer = client.get(f"/api/images/{row['id']}/{path}", follow_redirects=False)
            assert answer.status_code == 307
            assert answer.headers["cache-control"] == "private, no-store"
            with urllib.request.urlopen(answer.headers["location"], timeout=10) as signed:
                assert hashlib.sha256(signed.read()).hexdigest() == _sha256(open_store(config), key)


def test_a_store_that_stops_answering_holds_the_images_back_and_fails_none(
    make_config: Callable[..., Config], object_store_server, start_daemon, tmp_path: Path
) -> None:
    """A frozen server (SIGSTOP: connections open, no answer) is the slow store: every request
    times out, the images wait, and all are done once it answers again."""
    storage = s3_storage(object_store_server, tmp_path.name)
    storage["s3"]["timeout_s"] = 1.0
    config = make_config(storage=storage)
    start_daemon(config)
    copy_in(CORPUS_DIR / "flower.jpg", config.inbox_dir / "before.jpg")
    wait_for(_settled(config, 1), timeout=60, what="the first image")
    server = object_store_server.process
    server.send_signal(signal.SIGSTOP)
    try:
        for name in ("hopper.jpg", "basn6a08.png", "Landscape_3.jpg"):
            copy_in(CORPUS_DIR / name, config.inbox_dir / name)
        with serve(config) as client:
            health = wait_for(lambda: (answer := client.get("/healthz")).status_code == 503 and answer.json(),
                              timeout=60, interval=0.5, what="/healthz to say the store does not answer")
        assert health["problem"] in ("object store timed out", "object store unreachable"), health
        assert not [row for row in read_images(config) if row["status"] == "failed"]
    finally:
        server.send_signal(signal.SIGCONT)
    rows = wait_for(_settled(config, 4), timeout=90, interval=0.2, what="every image, once the store answers again")
    assert {row["status"] for row in rows} == {"done"}
    store = open_store(config)
    assert all(_sha256(store, row["stored_path"]) == row["sha256"] for row in rows)
    with serve(config) as client:
        wait_for(lambda: client.get("/healthz").status_code == 200, timeout=30, interval=0.5, what="/healthz to be ok again")
