"""The service's routes (api.status) over a database the real daemon made: statistics and
their caching, ping."""

from __future__ import annotations

import math
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, insert

from api import status
from models import migrate, stats_reads
from models.db import make_engine
from models.tables import Image as ImageRow
from tests.api.conftest import Library, config_for, insert_pending, serve
from tests.helpers import CORPUS_DIR, PREPARING, GatedCaptioner, finished, read_images, wait_for, write_config_file

pytestmark = pytest.mark.both_backends

# -- stats --------------------------------------------------------------------------------------


def _nearest_rank(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


def test_stats_match_the_records(library: Library, library_client) -> None:
    rows = read_images(library.config)
    stats = library_client.get("/api/stats").json()
    done = [row for row in rows if row["status"] == "done"]
    assert stats["total"] == len(rows) == 6
    assert stats["by_status"] == {"pending": 1, "processing": 0, "done": 4, "failed": 1}
    assert stats["finished"] == 5 and stats["queue_depth"] == 1
    assert stats["success_rate"] == 0.8 and stats["failure_rate"] == 0.2
    times = [row["processing_ms"] for row in done]
    # To 0.1 ms, rounded: within 0.05 ms of the exact figure.
    assert stats["processing_ms"]["average"] == pytest.approx(sum(times) / len(times), abs=0.05 + 1e-9)
    assert stats["processing_ms"]["p50"] == pytest.approx(_nearest_rank(times, 50), abs=0.05 + 1e-9)
    assert stats["processing_ms"]["p95"] == pytest.approx(_nearest_rank(times, 95), abs=0.05 + 1e-9)
    metadata_ms = [row["metadata_ms"] for row in done]
    assert stats["stage_average_ms"]["metadata"] == pytest.approx(sum(metadata_ms) / len(metadata_ms), abs=0.05 + 1e-9)
    assert stats["processing_ms"]["average"] == round(stats["processing_ms"]["average"], 1)
    assert stats["stage_average_ms"]["caption"] == 0.0  # caption.model = "none"
    assert stats["last_hour"]["processed"] == 5
    assert stats["caption"] == {
        "model": None,
        "device": None,
        "runtime": None,
        "available": False,
        "reason": 'caption.model is "none"',
        "fix": "set caption.model to a hub id or a model folder",
        "waiting": 4,  # the done images, none captioned
    }


def test_stats_of_an_empty_database_are_zeros(tmp_path, database_url: str) -> None:
    config = config_for(tmp_path, database={"url": database_url})
    config.data_dir.mkdir(parents=True)
    engine = make_engine(config.database_url)
    migrate.upgrade(engine)
    engine.dispose()
    with serve(config) as client:
        response = client.get("/api/stats")
    assert response.status_code == 200
    stats = response.json()
    assert stats["total"] == stats["finished"] == stats["queue_depth"] == 0
    assert stats["success_rate"] == stats["failure_rate"] == 0.0
    assert stats["processing_ms"] == {"average": 0.0, "p50": 0.0, "p95": 0.0}
    assert set(stats["stage_average_ms"].values()) == {0.0}


def test_stats_follow_new_writes_at_once(tmp_path, database_url: str) -> None:
    """The cached answer is dropped as soon as another connection commits."""
    config = config_for(tmp_path, database={"url": database_url})
    insert_pending(config, "a" * 64)
    with serve(config) as client:
        assert client.get("/api/stats").json()["total"] == 1
        assert client.get("/api/stats").json()["total"] == 1
        insert_pending(config, "b" * 64)
        assert client.get("/api/stats").json()["total"] == 2


def test_stats_are_computed_once_while_nothing_changes(tmp_path, database_url: str, monkeypatch) -> None:
    """Requests with no write in between share one computation (PostgreSQL too: its snapshot
    says nothing was written); a write, or the one-second age, makes a new one."""
    config = config_for(tmp_path, database={"url": database_url})
    insert_pending(config, "a" * 64)
    computed = []
    real = stats_reads.stats

    def counted(connection, **kwargs):
        computed.append(1)
        return real(connection, **kwargs)

    monkeypatch.setattr(stats_reads, "stats", counted)
    with serve(config) as client:
        for _ in range(5):
            assert client.get("/api/stats").json()["total"] == 1
        assert len(computed) == 1
        insert_pending(config, "b" * 64)
        assert client.get("/api/stats").json()["total"] == 2
        assert client.get("/api/stats").json()["total"] == 2
        assert len(computed) == 2
        monkeypatch.setattr(status, "STATS_MAX_AGE_S", 0.0)
        client.get("/api/stats")
        assert len(computed) == 3


def test_stats_percentiles_over_many_rows(tmp_path, database_url: str) -> None:
    """Nearest-rank p50/p95 read off the index agree with sorting in Python, odd and even sizes."""
    config = config_for(tmp_path, database={"url": database_url})
    config.data_dir.mkdir(parents=True)
    engine = make_engine(config.database_url)
    migrate.upgrade(engine)
    times = [((number * 7919) % 1000) / 10 for number in range(1, 202)]
    received = datetime(2026, 1, 1)
    with engine.begin() as connection:
        connection.execute(
            insert(ImageRow.__table__),
            [
                {"sha256": f"{number:064x}", "filename": f"{number}.jpg", "status": "done", "received_at": received,
                 "size_bytes": 1, "processing_ms": value, "hash_ms": 1.0}
                for number, value in enumerate(times)
            ],
        )
    with serve(config) as client:
        stats = client.get("/api/stats").json()
        assert stats["processing_ms"]["p50"] == pytest.approx(_nearest_rank(times, 50))
        assert stats["processing_ms"]["p95"] == pytest.approx(_nearest_rank(times, 95))
        assert stats["stage_average_ms"]["hash"] == 1.0
        # Every size from 1 up: the ranks are worked out in SQL, in integers.
        with engine.begin() as connection:
            connection.execute(delete(ImageRow.__table__))
        for size in range(1, 42):
            with engine.begin() as connection:
                connection.execute(
                    insert(ImageRow.__table__).values(
                        sha256=f"{10**6 + size:064x}", filename=f"s{size}.jpg", status="done", received_at=received,
                        size_bytes=1, processing_ms=times[size], hash_ms=1.0,
                    )
                )
            stats = client.get("/api/stats").json()
            assert stats["processing_ms"]["p50"] == pytest.approx(_nearest_rank(times[1 : size + 1], 50)), size
            assert stats["processing_ms"]["p95"] == pytest.approx(_nearest_rank(times[1 : size + 1], 95)), size
    engine.dispose()


def test_ping(library_client) -> None:
    assert library_client.get("/api/ping").json() == {"ok": True}


def test_stats_say_why_there_are_no_captions_and_how_many_wait(make_config, start_daemon, tmp_path: Path) -> None:
    from models.caption_state import FIX as CAPTION_FIX

    config = make_config(caption={"model": str(tmp_path / "no-model-here")})
    daemon = start_daemon(config)
    config.inbox_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CORPUS_DIR / "hopper.jpg", config.inbox_dir / "hopper.jpg")
    row = wait_for(lambda: next(iter(finished(read_images(config))), None), what="the image done")
    assert row["caption"] is None and row["caption_error"]
    wait_for(lambda: (daemon.caption_status or "").startswith("unavailable"), what="the model found missing")
    daemon.heartbeat()
    with serve(config) as client:
        caption = client.get("/api/stats").json()["caption"]
    assert caption["available"] is False and caption["waiting"] == 1
    assert caption["reason"] == "model not installed (folder not found)"
    assert caption["fix"] == CAPTION_FIX


def test_stats_and_htx_stats_say_the_model_is_being_prepared_never_off(make_config, start_daemon, tmp_path: Path, capsys) -> None:
    from daemon import cli

    gated = GatedCaptioner()
    config = make_config(caption={"model": "./gated"})
    daemon = start_daemon(config, captioner=gated)
    try:
        wait_for(lambda: (daemon.caption_status or "").startswith("preparing"), what="the model being prepared")
        daemon.heartbeat()
        with serve(config) as client:
            caption = client.get("/api/stats").json()["caption"]
        assert (caption["available"], caption["reason"], caption["fix"]) == (False, PREPARING, None)
        assert cli.main(["--config", str(write_config_file(config, tmp_path / "htx.toml")), "stats"]) == cli.EXIT_OK
        [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("captions ")]
        assert line.split(None, 1)[1] == PREPARING
    finally:
        gated.gate.set()
