"""An upload while another program holds the database locked: 202 queued after
api.register_timeout_s, and the file registered, once, when the lock goes."""

from __future__ import annotations

import hashlib
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

from tests.api.live import Htx, write_config
from tests.helpers import CORPUS_DIR, wait_for

pytestmark = pytest.mark.both_backends

REGISTER_TIMEOUT_S = 1.0


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
    htx = Htx(write_config(tmp_path / "htx", database_url, register_timeout_s=REGISTER_TIMEOUT_S), "run")
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
                assert REGISTER_TIMEOUT_S <= waited
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
