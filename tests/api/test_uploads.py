"""POST /api/images with the real daemon in-process: streaming, sniffing, limits, names, queueing."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from api import uploads
from models.config import Config, WatchConfig
from models.ignore import IgnoreRules
from tests.api.conftest import serve, wait_status
from tests.api.live import Htx, write_config
from tests.helpers import CORPUS_DIR, read_images, wait_for

UNSUPPORTED = {"error": "Only JPEG and PNG files are allowed."}

pytestmark = pytest.mark.both_backends


def _post(client, name: str | None, body: bytes, content_type: str = "image/jpeg", **kwargs):
    return client.post("/api/images", files={"file": (name, body, content_type)}, **kwargs)


def _leftovers(config: Config) -> list[str]:
    """What an upload left in uploads/ and the inbox."""
    found = []
    for folder in (config.uploads_dir, config.inbox_dir):
        if folder.is_dir():
            found += [path.name for path in folder.iterdir()]
    return found


def test_upload_is_registered_and_processed(config: Config, start_daemon) -> None:
    start_daemon(config)
    body = (CORPUS_DIR / "flower.jpg").read_bytes()
    with serve(config) as client:
        response = _post(client, "flower.jpg", body)
        assert response.status_code == 202
        answer = response.json()
        assert answer["id"] > 0 and answer["status"] in ("pending", "processing", "done")
        assert answer["image_id"] == answer["id"]  # what the original HTX API's clients read
        assert answer["filename"] == "flower.jpg" and answer["duplicate"] is False
        assert answer["sha256"] == hashlib.sha256(body).hexdigest()
        assert answer["links"]["self"] == response.headers["location"] == f"http://testserver/api/images/{answer['id']}"
        row = wait_status(config, answer["sha256"])
        assert row["status"] == "done" and row["id"] == answer["id"]
        assert client.get(f"/api/images/{answer['id']}").json()["metadata"]["width"] == 480
    assert not list(config.uploads_dir.iterdir())


def test_same_bytes_again_is_a_duplicate(config: Config, start_daemon) -> None:
    start_daemon(config)
    body = (CORPUS_DIR / "hopper.jpg").read_bytes()
    with serve(config) as client:
        first = _post(client, "hopper.jpg", body).json()
        wait_status(config, first["sha256"])
        again = _post(client, "other-name.jpg", body)
    assert again.status_code == 200
    record = again.json()
    assert record["duplicate"] is True and record["id"] == first["id"] and record["filename"] == "hopper.jpg"
    assert record["status"] == "done" and record["metadata"]["format"] == "JPEG"
    assert len(read_images(config)) == 1 and not _leftovers(config)


@pytest.mark.parametrize("name", ["hopper.gif", "gif_named_as.png", "webp_named_as.png", "text_named_as.jpg",
                                  "hopper.heif", "bmp_named_as.png"])
def test_anything_but_jpeg_and_png_is_refused_by_its_bytes(config: Config, name: str) -> None:
    with serve(config) as client:
        # The name and the client's content type say PNG: only the bytes count.
        response = _post(client, "photo.png", (CORPUS_DIR / name).read_bytes(), "image/png")
    assert response.status_code == 400
    assert response.json() == UNSUPPORTED
    assert not _leftovers(config)


def test_refusal_comes_before_the_rest_of_the_body(config: Config) -> None:
    """Only the first bytes are read: a huge GIF is refused without being received whole."""
    sent = []

    def body() -> Iterator[bytes]:
        boundary = b"--b0undary"
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="x.gif"\r\n\r\n'
        yield b"GIF89a" + b"\0" * 65536
        for _ in range(200):  # 13 MB more that should never be needed
            sent.append(1)
            yield b"\0" * 65536
        yield b"\r\n" + boundary + b"--\r\n"

    with serve(config) as client:
        response = client.post(
            "/api/images", content=body(), headers={"content-type": "multipart/form-data; boundary=b0undary"}
        )
    assert response.status_code == 400 and response.json() == UNSUPPORTED
    assert not _leftovers(config)


@pytest.mark.parametrize("name", ["broken.png", "xs1n0g01.png", "truncated_jpeg.jpg", "empty.jpg"])
def test_damaged_jpeg_or_png_is_accepted_and_fails_in_the_daemon(config: Config, start_daemon, name: str) -> None:
    """Corrupt files and the empty file are the daemon's to judge: it records why they failed."""
    start_daemon(config)
    body = (CORPUS_DIR / name).read_bytes()
    with serve(config) as client:
        response = _post(client, name, body)
        assert response.status_code == 202, response.text
        row = wait_status(config, response.json()["sha256"])
        record = client.get(f"/api/images/{row['id']}").json()
    assert (record["status"], record["error_kind"]) == ("failed", "corrupt")
    if not body:
        assert record["error"] == "corrupt image: the file is empty"


def test_over_the_limit_is_413_from_content_length(make_config) -> None:
    config = make_config(api={"max_upload_bytes": 1000})
    with serve(config) as client:
        response = _post(client, "big.jpg", b"\xff\xd8\xff" + b"\0" * 200_000)
    assert response.status_code == 413
    assert "error" in response.json()
    assert not _leftovers(config)


def test_over_the_limit_is_413_while_streaming(make_config) -> None:
    """No Content-Length (chunked): refused as soon as the count passes the limit."""
    config = make_config(api={"max_upload_bytes": 100_000})

    def body() -> Iterator[bytes]:
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n\xff\xd8\xff'
        for _ in range(10):
            yield b"\0" * 30_000
        yield b"\r\n--xx--\r\n"

    with serve(config) as client:
        response = client.post("/api/images", content=body(), headers={"content-type": "multipart/form-data; boundary=xx"})
    assert response.status_code == 413
    assert not _leftovers(config)


def test_a_file_just_under_the_limit_is_taken(make_config, start_daemon) -> None:
    body = (CORPUS_DIR / "hopper.jpg").read_bytes()
    config = make_config(api={"max_upload_bytes": len(body)})
    start_daemon(config)
    with serve(config) as client:
        assert _post(client, "hopper.jpg", body).status_code == 202


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("../../etc/passwd.jpg", "passwd.jpg"),
        ("C:\\Users\\me\\Pictures\\cat.jpg", "cat.jpg"),
        (".hidden.jpg", "hidden.jpg"),
        ("~tmp.jpg", "tmp.jpg"),
        ("photo.part", "photo.part.jpg"),
        ("Thumbs.db", "Thumbs.db.jpg"),
        ("été à Paris.jpg", "été à Paris.jpg"),
    ],
)
def test_client_names_are_sanitised(config: Config, start_daemon, sent: str, shown: str) -> None:
    start_daemon(config)
    with serve(config) as client:
        response = _post(client, sent, (CORPUS_DIR / "hopper.jpg").read_bytes())
    assert response.status_code == 202
    assert response.json()["filename"] == shown
    assert wait_status(config, response.json()["sha256"])["filename"] == shown


def test_control_characters_leave_the_name(config: Config, start_daemon) -> None:
    """Sent raw (httpx would percent-encode them): a bell, an escape, a DEL."""
    start_daemon(config)
    head = b'--zz\r\nContent-Disposition: form-data; name="file"; filename="../a\x07b\x1b\x7fc.jpg"\r\n\r\n'
    body = head + (CORPUS_DIR / "hopper.jpg").read_bytes() + b"\r\n--zz--\r\n"
    with serve(config) as client:
        response = client.post("/api/images", content=body, headers={"content-type": "multipart/form-data; boundary=zz"})
    assert response.status_code == 202
    assert response.json()["filename"] == "abc.jpg"


def test_a_nameless_upload_gets_a_name_from_its_digest(config: Config, start_daemon) -> None:
    start_daemon(config)
    body = (CORPUS_DIR / "hopper.png").read_bytes()
    with serve(config) as client:
        response = _post(client, None, body, "application/octet-stream")
    sha256 = hashlib.sha256(body).hexdigest()
    assert response.status_code == 202
    assert response.json()["filename"] == f"upload-{sha256[:12]}.png"


def test_queued_when_the_daemon_does_not_register_in_time(make_config, start_daemon) -> None:
    config = make_config(api={"register_timeout_s": 0.2})
    body = (CORPUS_DIR / "hopper.jpg").read_bytes()
    sha256 = hashlib.sha256(body).hexdigest()
    with serve(config) as client:
        response = _post(client, "hopper.jpg", body)
        assert response.status_code == 202
        assert response.json() == {
            "id": None,
            "image_id": None,
            "status": "queued",
            "filename": "hopper.jpg",
            "sha256": sha256,
            "links": {"search": f"http://testserver/api/images?sha256={sha256}"},
        }
        assert (config.inbox_dir / "hopper.jpg").read_bytes() == body  # waiting for the daemon
        start_daemon(config)
        found = wait_for(
            lambda: client.get("/api/images", params={"sha256": sha256}).json()["items"],
            what="the queued upload to be found",
        )
        assert found[0]["filename"] == "hopper.jpg"


def test_upload_token(make_config, start_daemon) -> None:
    config = make_config(api={"upload_token": "s3cret-upload-token"})
    start_daemon(config)
    body = (CORPUS_DIR / "hopper.jpg").read_bytes()
    with serve(config) as client:
        missing = _post(client, "a.jpg", body)
        wrong = _post(client, "a.jpg", body, headers={"authorization": "Bearer nope"})
        right = _post(client, "a.jpg", body, headers={"authorization": "Bearer s3cret-upload-token"})
        reads_stay_open = client.get("/api/images")
    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert "error" in refused.json() and refused.headers["www-authenticate"].startswith("Bearer")
    assert right.status_code == 202
    assert reads_stay_open.status_code == 200


def test_bodies_that_are_not_one_file(config: Config) -> None:
    with serve(config) as client:
        not_multipart = client.post("/api/images", content=b"\xff\xd8\xff", headers={"content-type": "image/jpeg"})
        no_file = client.post("/api/images", data={"other": "x"}, files={"picture": ("a.jpg", b"\xff\xd8\xff")})
        two_files = client.post(
            "/api/images", files=[("file", ("a.jpg", b"\xff\xd8\xff\xe0")), ("file", ("b.jpg", b"\xff\xd8\xff\xe1"))]
        )
    assert not_multipart.status_code == 415
    assert no_file.status_code == 400 and "file" in no_file.json()["error"]
    assert two_files.status_code == 400
    assert all("error" in response.json() for response in (not_multipart, no_file, two_files))
    assert not _leftovers(config)


# -- the pieces -------------------------------------------------------------------------------


def test_inbox_name() -> None:
    rules = IgnoreRules(WatchConfig().ignore)
    sha = "ab" * 32
    assert uploads.inbox_name("a/b/c.jpg", sha, "JPEG", rules) == "c.jpg"
    assert uploads.inbox_name("...", sha, "JPEG", rules) == f"upload-{sha[:12]}.jpg"
    assert uploads.inbox_name(None, sha, None, rules) == f"upload-{sha[:12]}"
    long = "é" * 300 + ".jpeg"
    fitted = uploads.inbox_name(long, sha, "JPEG", rules)
    assert len(fitted.encode()) <= uploads.MAX_NAME_BYTES and fitted.endswith("é.jpeg")


def test_delivery_never_replaces_a_file_in_the_inbox(config: Config, tmp_path: Path) -> None:
    config.inbox_dir.mkdir(parents=True)
    (config.inbox_dir / "cat.jpg").write_bytes(b"someone else's")
    config.uploads_dir.mkdir(parents=True)
    names = []
    for content in (b"\xff\xd8\xff first", b"\xff\xd8\xff second"):
        staged_path = config.uploads_dir / f"{len(names)}.part"
        handle = open(staged_path, "xb")
        handle.write(content)
        sha = hashlib.sha256(content).hexdigest()
        staged = uploads.StagedFile(staged_path, handle, sha, len(content), "cat.jpg", "JPEG")
        names.append(uploads.deliver(staged, config))
    sha_first = hashlib.sha256(b"\xff\xd8\xff first").hexdigest()
    sha_second = hashlib.sha256(b"\xff\xd8\xff second").hexdigest()
    assert names == [f"cat-{sha_first[:8]}.jpg", f"cat-{sha_second[:8]}.jpg"]
    assert (config.inbox_dir / "cat.jpg").read_bytes() == b"someone else's"
    assert not list(config.uploads_dir.iterdir())


def test_rename_noreplace(tmp_path: Path) -> None:
    source, taken = tmp_path / "a", tmp_path / "b"
    source.write_text("new")
    taken.write_text("old")
    with pytest.raises(FileExistsError):
        uploads.rename_noreplace(source, taken)
    assert taken.read_text() == "old" and source.exists()
    uploads.rename_noreplace(source, tmp_path / "c")
    assert (tmp_path / "c").read_text() == "new" and not source.exists()


def test_stale_part_cleanup_keeps_other_files(tmp_path: Path) -> None:
    (tmp_path / "keep.jpg").write_bytes(b"x")
    old = tmp_path / "old.part"
    old.write_bytes(b"x")
    os.utime(old, (0, 0))
    assert uploads.remove_stale_parts(tmp_path) == 1
    assert [path.name for path in tmp_path.iterdir()] == ["keep.jpg"]


# An upload while another program holds the database locked: 202 queued after
# api.register_timeout_s, and the file registered, once, when the lock goes.
LOCKED_REGISTER_TIMEOUT_S = 1.0


@contextmanager
def sqlite_locked(database: Path) -> Iterator[None]:
    """BEGIN EXCLUSIVE on the database file: no other connection may write until it ends."""
    connection = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


@contextmanager
def postgres_locked(database_url: str) -> Iterator[None]:
    """LOCK TABLE images: no other session may read or write it until the transaction ends."""
    url = make_url(database_url)
    connection = psycopg.connect(
        host=url.host or url.query.get("host"), port=url.port, user=url.username, password=url.password, dbname=url.database
    )
    try:
        connection.execute("LOCK TABLE images IN EXCLUSIVE MODE")  # reads go on, writes wait
        yield
        connection.rollback()
    finally:
        connection.close()


def test_an_upload_during_a_database_lock_is_queued_then_registered_once(tmp_path: Path, database_url: str) -> None:
    htx = Htx(write_config(tmp_path / "htx", database_url, register_timeout_s=LOCKED_REGISTER_TIMEOUT_S), "run")
    # Held from before the upload until after its answer: longer than api.register_timeout_s.
    locked: Callable[[], AbstractContextManager[None]] = (
        (lambda: postgres_locked(database_url)) if database_url else (lambda: sqlite_locked(tmp_path / "htx" / "data" / "htx.db"))
    )
    body = (CORPUS_DIR / "flower.jpg").read_bytes()
    sha256 = hashlib.sha256(body).hexdigest()
    try:
        htx.wait_healthy()
        with httpx.Client(base_url=htx.base_url, timeout=30) as client:
            with locked():
                started = time.monotonic()
                answer = client.post("/api/images", files={"file": ("flower.jpg", body, "image/jpeg")})
                waited = time.monotonic() - started
                assert answer.status_code == 202, answer.text
                assert answer.json()["id"] is None and answer.json()["status"] == "queued"
                assert answer.json()["sha256"] == sha256
                assert LOCKED_REGISTER_TIMEOUT_S <= waited
                # Still locked: nothing registered yet.
                assert client.get("/api/images", params={"sha256": sha256}).json()["items"] == []

            def done() -> list[dict] | None:
                items = client.get("/api/images", params={"sha256": sha256}).json()["items"]
                return items if items and all(item["status"] == "done" for item in items) else None

            items = wait_for(done, timeout=60, what="the queued upload registered and done")
            assert len(items) == 1 and items[0]["filename"] == "flower.jpg"
            stats = client.get("/api/stats").json()
            assert stats["total"] == 1 and stats["by_status"]["done"] == 1
    finally:
        assert htx.stop(signal.SIGINT) == 0, htx.log()
    assert "Traceback" not in htx.log()
