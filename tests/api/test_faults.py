"""Database faults: named in answers and /healthz, logged once per episode, and writes that
wait on a lock holding up no read; junk methods one metrics label. Real PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from api import faults
from api.faults import Faults
from models.db import parse_url
from tests.api.conftest import Library, serve
from tests.helpers import wait_for

on_postgresql = pytest.mark.parametrize("backend", ["postgresql"], indirect=True, scope="module")


class _Locked:
    """LOCK TABLE images IN ACCESS EXCLUSIVE MODE, held by another connection until release."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(parse_url(url))
        self.connection = self.engine.connect()
        self.connection.execute(text("LOCK TABLE images IN ACCESS EXCLUSIVE MODE"))

    def release(self) -> None:
        self.connection.rollback()
        self.connection.close()
        self.engine.dispose()


def _waiting_on_locks(connection: Any) -> int:
    return connection.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one()


@on_postgresql
def test_a_locked_table_is_named_in_reads_and_healthz_and_both_recover(library: Library) -> None:
    image_id = library.ids["flower.jpg"]
    with serve(library.config) as client:
        assert client.get("/healthz").json()["problem"] is None
        lock = _Locked(library.config.database_url)
        try:
            started = time.monotonic()
            read = client.get(f"/api/images/{image_id}")
            assert read.status_code == 503
            assert "lock timeout" in read.json()["error"]
            assert "/" not in read.json()["error"].replace("/healthz", "")
            assert time.monotonic() - started < 9  # the reader's lock timeout, not the statement's
            health = client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "degraded"
            assert "lock" in health.json()["problem"]
        finally:
            lock.release()
        assert client.get(f"/api/images/{image_id}").status_code == 200
        health = client.get("/healthz")
        assert health.status_code == 200, health.json()
        assert health.json()["problem"] is None


@on_postgresql
def test_writes_waiting_on_a_lock_do_not_delay_reads(library: Library) -> None:
    token = library.config.api.upload_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reprocess_id, read_id = library.ids["hopper.jpg"], library.ids["flower.jpg"]
    with serve(library.config) as client:
        engine = create_engine(parse_url(library.config.database_url))
        blocker = engine.connect()
        blocker.execute(text("SELECT 1 FROM images WHERE id = :id FOR UPDATE"), {"id": reprocess_id})
        done: list[int] = []
        writers = [
            threading.Thread(target=lambda: done.append(client.post(f"/api/images/{reprocess_id}/reprocess", headers=headers).status_code))
            for _ in range(12)
        ]
        try:
            for writer in writers:
                writer.start()
            # One write waits on the row lock in the database; the rest queue for their turn.
            wait_for(lambda: _waiting_on_locks(blocker) >= 1, timeout=30, what="a write to wait on the lock")
            read = client.get(f"/api/images/{read_id}/original")
            assert read.status_code == 200
            assert len(done) < len(writers), "the read answered only after the writes"
        finally:
            blocker.rollback()
            blocker.close()
            for writer in writers:
                writer.join(timeout=120)
            engine.dispose()
        assert len(done) == len(writers)
        assert all(status in (202, 409, 503) for status in done), done


@on_postgresql
def test_junk_methods_collapse_to_one_metrics_label(library: Library) -> None:
    with serve(library.config) as client:
        for method in ("PROPFIND", "MKCOL", "BREW", "LOCK", "SEARCH"):
            client.request(method, "/api/ping")
        body = client.get("/metrics").text
    assert 'method="other"' in body
    for method in ("PROPFIND", "MKCOL", "BREW", "LOCK", "SEARCH"):
        assert f'method="{method}"' not in body


def test_one_log_line_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    tracker = Faults()
    with caplog.at_level(logging.WARNING, logger="htx.api"):
        for _ in range(50):
            tracker.failed(faults.UNREACHABLE, "connection refused")
        assert tracker.recent() == faults.UNREACHABLE
        for _ in range(50):
            tracker.succeeded()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2, lines
    assert "unreachable" in lines[0]
    assert "working again after" in lines[1]
    assert tracker.recent() is None


@on_postgresql
def test_a_stopped_server_logs_once_not_per_request(library: Library, caplog: pytest.LogCaptureFixture) -> None:
    stopped = library.config.database_url.rsplit("@", 1)
    # The same database on a port nothing listens on: the server is, as far as HTX sees, down.
    _host, rest = stopped[1].split("/", 1)
    url = f"{stopped[0]}@127.0.0.1:1/{rest}"
    from models import config as config_module

    config = config_module.replace(library.config, database={"url": url})
    with caplog.at_level(logging.WARNING, logger="htx.api"), serve(config) as client:
        answers = [client.get(f"/api/images/{library.ids['flower.jpg']}") for _ in range(20)]
    assert all(answer.status_code == 503 for answer in answers)
    assert "unreachable" in answers[0].json()["error"]
    problems = [record for record in caplog.records if "database problem" in record.getMessage()]
    assert len(problems) == 1, [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize(
    "said",
    ['could not translate host name "db.example.org" to address: Name or service not known', "Network is unreachable", "SSL SYSCALL error: EOF detected"],
)
def test_a_database_server_that_cannot_be_reached_is_said_to_be_unreachable_not_missing(said: str) -> None:
    import psycopg
    from sqlalchemy.exc import OperationalError

    from api.faults import UNREACHABLE, problem_of

    assert problem_of(OperationalError("SELECT 1", {}, psycopg.OperationalError(said))) == UNREACHABLE
