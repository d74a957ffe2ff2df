"""A real `htx daemon` and `htx api` on PostgreSQL while the database server goes down and comes
back: no image fails for it, the API answers 503 without a trace, /healthz says so, the daemon
says so once and resumes by itself."""

from __future__ import annotations

from pathlib import Path

import httpx

from models import config as config_module
from tests.api.live import Htx, free_port
from tests.helpers import copy_in, read_images, wait_for, write_toml
from tests.postgres import ThrowawayCluster

BEFORE, DURING = 2, 4


def test_a_database_server_that_goes_down_is_waited_out(
    own_postgres_cluster: ThrowawayCluster, tmp_path: Path, photo_files: list[Path]
) -> None:
    cluster = own_postgres_cluster
    config_file = write_toml(
        tmp_path / "htx.toml",
        {
            "paths": {"data_dir": str(tmp_path / "data")},
            "database": {"url": cluster.new_database()},
            "watch": {"settle_ms": 200, "rescan_s": 0},
            "pipeline": {"workers": 2},
            "caption": {"model": "none"},
            "api": {"port": free_port()},
        },
    )
    config = config_module.load(config_file)
    daemon = Htx(config_file, "daemon")
    api = Htx(config_file, "api")
    try:
        api.wait_healthy()
        for photo in photo_files[:BEFORE]:
            copy_in(photo, config.inbox_dir / photo.name)
        wait_for(lambda: sum(row["status"] == "done" for row in read_images(config)) == BEFORE, what="the first images")

        cluster.pause()
        for photo in photo_files[BEFORE : BEFORE + DURING]:
            copy_in(photo, config.inbox_dir / photo.name)
        wait_for(lambda: "database unavailable" in daemon.log(), what="the daemon to say the database is down")
        health = httpx.get(f"{api.base_url}/healthz", timeout=10)
        assert health.status_code == 503 and health.json()["database"] == "unavailable"
        for path in ("/api/images", "/api/stats", "/api/images/1"):
            response = httpx.get(f"{api.base_url}{path}", timeout=10)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == "5"
            assert "Traceback" not in response.text and str(cluster.folder) not in response.text
        assert daemon.process.poll() is None, daemon.log()

        cluster.resume()
        rows = wait_for(
            lambda: (rows := read_images(config)) and len(rows) == BEFORE + DURING
            and all(row["status"] == "done" for row in rows) and rows,
            timeout=90,
            what="every image to be done once the database is back",
        )
        assert sorted(row["filename"] for row in rows) == sorted(p.name for p in photo_files[: BEFORE + DURING])
        wait_for(lambda: httpx.get(f"{api.base_url}/healthz", timeout=10).status_code == 200, what="/healthz ok again")
        # Each original leaves the inbox just after its `done` is committed.
        wait_for(lambda: not any(config.inbox_dir.iterdir()), what="the inbox to be empty")
        log = daemon.log()
        assert log.count("database unavailable (") <= 2 and "resolved after" in log, log
        assert "Traceback" not in log and "Traceback" not in api.log()
        assert daemon.stop() == 0
    finally:
        daemon.stop()
        api.stop()
