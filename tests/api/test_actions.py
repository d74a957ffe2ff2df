"""The endpoints that act on one image (api/actions.py): original, delete, reprocess, recaption.

With the real daemon in-process (TestClient) on both backends, and once through a real `htx run`.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from models.config import Config
from tests.api.conftest import insert_pending, serve, wait_status
from tests.api.live import Htx, write_config
from tests.helpers import CORPUS_DIR, fill, mounted_tmpfs, read_images, wait_for

TOKEN = "s3cret-upload-token"
READER = "reader-token-of-this-test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _drop(config: Config, name: str, body: bytes) -> dict:
    """`body` into the inbox as `name`; the finished row."""
    config.inbox_dir.mkdir(parents=True, exist_ok=True)
    (config.inbox_dir / name).write_bytes(body)
    return wait_status(config, hashlib.sha256(body).hexdigest())


@pytest.mark.both_backends
def test_the_original_comes_back_as_it_was_dropped(config: Config, start_daemon) -> None:
    start_daemon(config)
    body = (CORPUS_DIR / "flower.jpg").read_bytes()
    row = _drop(config, "Holiday photo é.jpg", body)
    with serve(config) as client:
        response = client.get(f"/api/images/{row['id']}/original")

        assert response.status_code == 200 and response.content == body
        assert response.headers["content-type"] == "image/jpeg"
        assert response.headers["etag"] == f'"{row["sha256"]}"'
        disposition = response.headers["content-disposition"]
        assert disposition.startswith("attachment;") and "filename*=utf-8''Holiday%20photo%20%C3%A9.jpg" in disposition
        again = client.get(f"/api/images/{row['id']}/original", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and not again.content
        assert client.get("/api/images/999/original").status_code == 404


@pytest.mark.both_backends
def test_delete_removes_the_record_and_its_files_and_the_same_bytes_come_back_as_new(
    config: Config, start_daemon
) -> None:
    start_daemon(config)
    body = (CORPUS_DIR / "hopper.jpg").read_bytes()
    row = _drop(config, "hopper.jpg", body)
    files = [config.data_dir / row[key] for key in ("stored_path", "thumb_small_path", "thumb_medium_path")]
    assert all(path.is_file() for path in files)
    with serve(config) as client:
        assert client.get("/api/stats").json()["total"] == 1

        response = client.delete(f"/api/images/{row['id']}")

        assert response.status_code == 204
        assert client.get(f"/api/images/{row['id']}").status_code == 404
        assert not any(path.exists() for path in files)
        assert client.get("/api/stats").json()["total"] == 0
        assert client.get("/api/images", params={"q": "hopper"}).json()["items"] == []
        assert client.delete(f"/api/images/{row['id']}").status_code == 404

        again = _drop(config, "hopper.jpg", body)

        assert again["id"] != row["id"] and again["status"] == "done"
        assert client.get(f"/api/images/{again['id']}/original").content == body


def test_a_trash_folder_keeps_deleted_originals(make_config, start_daemon, tmp_path: Path) -> None:
    config = make_config(paths={"data_dir": "data", "trash": "trash"})
    start_daemon(config)
    body = (CORPUS_DIR / "broken.png").read_bytes()  # a failed image: its original and note in failed/
    row = _drop(config, "broken.png", body)
    assert row["status"] == "failed"
    with serve(config) as client:
        assert client.delete(f"/api/images/{row['id']}").status_code == 204
    kept = sorted(path.name for path in (tmp_path / "trash").iterdir())
    assert kept == [f"{row['id']}-broken.png", f"{row['id']}-broken.png.error.txt"]
    assert (tmp_path / "trash" / kept[0]).read_bytes() == body
    assert not list((config.data_dir / "failed").iterdir())


@pytest.mark.both_backends
def test_a_trash_that_cannot_take_the_original_refuses_the_delete_and_changes_nothing(
    make_config, start_daemon, tmp_path: Path
) -> None:
    config = make_config(paths={"data_dir": "data", "trash": "trash"})
    start_daemon(config)
    body = (CORPUS_DIR / "flower.jpg").read_bytes()
    row = _drop(config, "flower.jpg", body)
    original = config.data_dir / row["stored_path"]
    trash = tmp_path / "trash"
    url = f"/api/images/{row['id']}"
    with serve(config) as client:

        def refused(status: int) -> None:
            response = client.delete(url)
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert "paths.trash" in error and "not deleted" in error and str(tmp_path) not in error
            assert client.get(url).json()["status"] == "done" and original.read_bytes() == body

        trash.write_text("a file where the folder should be")
        refused(503)
        trash.unlink()
        with mounted_tmpfs(trash, "1m"):
            subprocess.run(["mount", "-o", "remount,ro", str(trash)], check=True)
            refused(503)
        with mounted_tmpfs(trash, "64k"):
            fill(trash)
            refused(507)
            assert [path.name for path in trash.iterdir()] == ["filler"]  # no part of the original

        assert client.delete(url).status_code == 204
    kept = trash / f"{row['id']}-{original.name}"
    assert list(trash.iterdir()) == [kept]
    assert kept.read_bytes() == body and not original.exists()


@pytest.mark.both_backends
def test_reprocess_refuses_an_image_whose_original_is_gone_and_keeps_its_record(config: Config, start_daemon) -> None:
    start_daemon(config)
    failed = _drop(config, "broken.png", (CORPUS_DIR / "broken.png").read_bytes())
    done = _drop(config, "flower.jpg", (CORPUS_DIR / "flower.jpg").read_bytes())
    assert failed["status"] == "failed" and done["status"] == "done"
    for row in (failed, done):
        (config.data_dir / row["stored_path"]).unlink()
    with serve(config) as client:
        for row in (failed, done):
            response = client.post(f"/api/images/{row['id']}/reprocess")

            assert response.status_code == 409
            assert "original is no longer stored" in response.json()["error"]
    after = {row["id"]: row for row in read_images(config)}
    assert after[failed["id"]]["status"] == "failed" and after[failed["id"]]["error"] == failed["error"]
    assert after[done["id"]] == done  # still done, thumbnails and all


@pytest.mark.both_backends
def test_an_original_gone_once_queued_again_leaves_a_consistent_failed_record(config: Config, start_daemon) -> None:
    first = start_daemon(config)
    broken = (CORPUS_DIR / "broken.png").read_bytes()
    flower = (CORPUS_DIR / "flower.jpg").read_bytes()
    failed = _drop(config, "broken.png", broken)
    done = _drop(config, "flower.jpg", flower)
    thumbnails = [config.data_dir / done[key] for key in ("thumb_small_path", "thumb_medium_path")]
    first.stop()
    with serve(config) as client:
        for row in (failed, done):  # queued while the original is there, then it goes
            assert client.post(f"/api/images/{row['id']}/reprocess").status_code == 202
            (config.data_dir / row["stored_path"]).unlink()
        start_daemon(config)
        rows = wait_for(
            lambda: (rows := {row["id"]: row for row in read_images(config)})
            and all(row["status"] == "failed" for row in rows.values())
            and rows,
            what="both images failed",
        )

        # A failed image keeps the reason it failed for.
        assert rows[failed["id"]]["error"] == failed["error"]
        assert rows[failed["id"]]["error_kind"] == failed["error_kind"]
        # A done one says why, and has no thumbnails left, in the record or on disk.
        gone = rows[done["id"]]
        assert gone["error"].startswith("its original is no longer stored") and gone["error_kind"] == "missing"
        assert gone["thumb_small_path"] is None and gone["thumb_medium_path"] is None
        assert not any(path.exists() for path in thumbnails)
        thumbnail = client.get(f"/api/images/{done['id']}/thumbnails/small")
        assert (thumbnail.status_code, thumbnail.json()) == (400, {"error": "Processing Failure"})
        assert client.get(f"/api/images/{done['id']}").json()["thumbnails"] == {"small": None, "medium": None}
        assert client.get(f"/api/images/{done['id']}/original").status_code == 404
        assert client.post(f"/api/images/{done['id']}/reprocess").status_code == 409  # not queued for ever

        # The same bytes dropped again go back in their place, and it can be processed again.
        config.inbox_dir.mkdir(parents=True, exist_ok=True)
        (config.inbox_dir / "flower again.jpg").write_bytes(flower)
        wait_for(lambda: (config.data_dir / done["stored_path"]).is_file(), what="the original put back")
        assert client.post(f"/api/images/{done['id']}/reprocess").status_code == 202
        redone = wait_for(
            lambda: next((row for row in read_images(config) if row["id"] == done["id"] and row["status"] == "done"), None),
            what="the image done again",
        )
    assert redone["thumb_small_path"] == done["thumb_small_path"]
    assert all(path.is_file() for path in thumbnails)


@pytest.mark.both_backends
def test_reprocess_queues_a_finished_image_again(config: Config, start_daemon) -> None:
    start_daemon(config)
    row = _drop(config, "flower.jpg", (CORPUS_DIR / "flower.jpg").read_bytes())
    with serve(config) as client:
        response = client.post(f"/api/images/{row['id']}/reprocess")

        assert response.status_code == 202
        assert response.json() == {
            "id": row["id"],
            "image_id": row["id"],
            "status": "pending",
            "links": {"self": f"http://testserver/api/images/{row['id']}"},
        }
        redone = wait_for(
            lambda: next((r for r in read_images(config) if r["status"] == "done" and r["processed_at"] > row["processed_at"]), None),
            what="the image processed again",
        )
        assert redone["id"] == row["id"] and len(read_images(config)) == 1
        assert client.post("/api/images/999/reprocess").status_code == 404


def test_what_cannot_be_done_to_an_image_says_why(config: Config) -> None:
    config.inbox_dir.mkdir(parents=True, exist_ok=True)
    image_id = insert_pending(config, "0" * 64)
    with serve(config) as client:
        for request in (client.delete, lambda url: client.post(f"{url}/reprocess")):
            response = request(f"/api/images/{image_id}")
            assert response.status_code == 409
            assert response.json()["error"].startswith("The image is pending: it can be ")
        assert client.get(f"/api/images/{image_id}/original").status_code == 409
        # caption.model = "none"
        assert client.post(f"/api/images/{image_id}/recaption").json() == {
            "error": "Captions are off: set caption.model in the configuration first."
        }


def test_before_the_daemon_has_made_the_database_a_change_is_503_and_makes_none(config: Config) -> None:
    with serve(config) as client:
        response = client.delete("/api/images/1")
    assert response.status_code == 503
    assert not (config.data_dir / "htx.db").exists()


def test_recaption_captions_a_done_image_again(make_config, start_daemon, tiny_blip: Path) -> None:
    config = make_config(caption={"model": str(tiny_blip), "max_new_tokens": 5, "batch_wait_ms": 0})
    start_daemon(config)
    row = _drop(config, "hopper.jpg", (CORPUS_DIR / "hopper.jpg").read_bytes())
    assert row["caption"]
    with serve(config) as client:
        assert client.post(f"/api/images/{row['id']}/recaption").status_code == 202
        again = wait_for(
            lambda: next((r for r in read_images(config) if r["status"] == "done" and r["processed_at"] > row["processed_at"]), None),
            what="the image captioned again",
        )
    assert again["caption"] == row["caption"]  # the same model, the same bytes
    assert again["caption_runtime"] and again["thumb_small_path"] == row["thumb_small_path"]


def test_changes_need_the_upload_token_and_reading_does_not(make_config, start_daemon) -> None:
    config = make_config(api={"upload_token": TOKEN})
    start_daemon(config)
    row = _drop(config, "hopper.jpg", (CORPUS_DIR / "hopper.jpg").read_bytes())
    url = f"/api/images/{row['id']}"
    with serve(config) as client:
        for method, path in (("DELETE", url), ("POST", f"{url}/reprocess"), ("POST", f"{url}/recaption")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                assert "Authorization: Bearer <token>" in response.json()["error"]
        assert client.get(f"{url}/original").status_code == 200
        assert client.post(f"{url}/reprocess", headers=AUTH).status_code == 202
        wait_status(config, row["sha256"])
        assert client.delete(url, headers=AUTH).status_code == 204


def test_through_a_real_htx_run(tmp_path: Path) -> None:
    htx = Htx(write_config(tmp_path / "htx", upload_token=TOKEN, read_token=READER), "run")
    try:
        htx.wait_healthy()
        body = (CORPUS_DIR / "flower.jpg").read_bytes()
        # The upload token reads too: this client carries it on every request.
        with httpx.Client(base_url=htx.base_url, timeout=10, headers=AUTH) as client:
            reading = {"Authorization": f"Bearer {READER}"}
            assert httpx.get(f"{htx.base_url}/api/images", timeout=10).status_code == 401
            assert httpx.get(f"{htx.base_url}/healthz", timeout=10).status_code == 200
            assert client.get("/api/images", headers=reading).status_code == 200
            assert client.post("/api/images/1/reprocess", headers=reading).status_code == 401  # reading only
            upload = client.post("/api/images", files={"file": ("flower.jpg", body, "image/jpeg")}).json()
            image_id = upload["image_id"]
            assert image_id == upload["id"]
            wait_for(lambda: client.get(f"/api/images/{image_id}").json()["status"] == "done", what="the upload done")
            assert client.get(f"/api/images/{image_id}/original", headers=reading).content == body
            assert client.post(f"/api/images/{image_id}/recaption").status_code == 409  # caption.model = "none"
            assert client.post(f"/api/images/{image_id}/reprocess").status_code == 202
            wait_for(lambda: client.get(f"/api/images/{image_id}").json()["status"] == "done", what="processed again")
            metrics = client.get("/metrics", headers=reading)
            assert metrics.status_code == 200 and 'htx_images{status="done"} 1.0' in metrics.text
            assert client.delete(f"/api/images/{image_id}", headers=reading).status_code == 401
            assert client.delete(f"/api/images/{image_id}").status_code == 204
            assert client.get(f"/api/images/{image_id}").status_code == 404

            again = client.post("/api/images", files={"file": ("flower.jpg", body, "image/jpeg")}).json()

            assert again["duplicate"] is False and again["id"] not in (None, image_id)
    finally:
        assert htx.stop(signal.SIGINT) == 0, htx.log()
    assert "Traceback" not in htx.log()
