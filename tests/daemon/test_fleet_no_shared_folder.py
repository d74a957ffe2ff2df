"""A fleet that shares nothing but PostgreSQL and a bucket (a real SeaweedFS): a watching
daemon, a thumbnails-only daemon on another data folder, an API on a third, daemons SIGKILLed
at random. Every file ends as exactly one record, its objects in the bucket with the right
bytes, and nothing of the images in any machine's own folder."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from daemon.cli import main
from models import config as config_module
from models.config import Config
from models.store import PARTS, incoming_key
from models.stores import open_store
from tests.api.live import Htx, free_port
from tests.conftest import s3_storage
from tests.daemon.test_fleet import Daemon, claim_holders
from tests.helpers import photo_bytes, read_images, wait_for, write_toml

VALID, TRUNCATED, DUPLICATED = 60, 10, 10


def _config(folder: Path, database_url: str, storage: dict[str, Any], **pipeline: Any) -> tuple[Path, Config]:
    folder.mkdir(parents=True)
    path = write_toml(folder / "htx.toml", {
        "paths": {"data_dir": str(folder / "data")},
        "database": {"url": database_url},
        "watch": {"settle_ms": 200, "rescan_s": 2},
        "pipeline": {"workers": 2, "lease_s": 3, "max_attempts": 20} | pipeline,
        "caption": {"model": "none"},
        "api": {"port": free_port()},
        "storage": storage,
    })
    return path, config_module.load(path)


def _drop(inbox: Path, staging: Path) -> set[str]:
    """Valid photos, truncated copies, duplicates under other names; the distinct digests."""
    staging.mkdir(parents=True)
    inbox.mkdir(parents=True, exist_ok=True)
    made = []
    for number in range(VALID + TRUNCATED):
        data = photo_bytes(number, size=(480, 360))
        path = staging / f"photo-{number:03}.jpg"
        path.write_bytes(data if number < VALID else data[: len(data) // 2])
        made.append(path)
    for number, path in enumerate(made[:DUPLICATED]):
        shutil.copyfile(path, staging / f"copy-{number:03}.jpg")
    digests = {hashlib.sha256(path.read_bytes()).hexdigest() for path in staging.iterdir()}
    for path in sorted(staging.iterdir()):
        path.rename(inbox / path.name)
    return digests


def _local_image_files(config: Config) -> list[Path]:
    return [path for part in ("originals", "thumbnails", "failed") if (config.data_dir / part).exists()
            for path in (config.data_dir / part).rglob("*") if path.is_file()]


def _sha256(store: Any, key: str) -> str:
    with store.open(key) as stored:
        return hashlib.sha256(stored.reader.read()).hexdigest()


def test_a_fleet_with_no_shared_folder_loses_nothing_and_duplicates_nothing(
    postgres_cluster, object_store_server, tmp_path: Path
) -> None:
    url = postgres_cluster.new_database()
    storage = s3_storage(object_store_server, tmp_path.name)
    watcher_file, watcher = _config(tmp_path / "a", url, storage)
    worker_file, worker = _config(tmp_path / "b", url, storage, roles=["thumbnails"])
    api_file, api = _config(tmp_path / "c", url, storage)
    store = open_store(watcher)
    kinds = {"watcher": watcher_file, "worker": worker_file}
    running = {"watcher": Daemon(watcher_file, "watcher-0"), "worker": Daemon(worker_file, "worker-0")}
    everyone = list(running.values())
    server = None
    try:
        wait_for(lambda: "watching" in running["watcher"].log(), timeout=60, what="the watcher to watch")
        digests = _drop(watcher.inbox_dir, tmp_path / "staging")
        rng = random.Random(24)
        kills = Counter()
        # Kill the daemon holding a claim, each kind in turn, and start another of its kind.
        for kind in ("worker", "watcher", "worker", "watcher"):
            settled = sum(row["status"] in ("done", "failed") for row in read_images(watcher))
            if settled >= len(digests) - 10:
                break
            wait_for(lambda: sum(row["status"] in ("done", "failed") for row in read_images(watcher)) > settled + rng.randint(2, 8),
                     timeout=60, interval=0.01, what="progress before the next kill")
            victim = running[kind]
            wait_for(lambda: victim.process.pid in claim_holders(watcher), timeout=30, interval=0.002, what=f"the {kind} to hold a claim")
            victim.kill()
            kills[kind] += 1
            running[kind] = Daemon(kinds[kind], f"{kind}-{kills[kind]}")
            everyone.append(running[kind])
        assert kills["worker"] >= 1 and kills["watcher"] >= 1, kills

        def settled_rows() -> list[dict] | None:
            rows = read_images(watcher)
            if len(rows) != len(digests) or any(row["status"] not in ("done", "failed") or row["stage"] for row in rows):
                return None
            return None if any(watcher.inbox_dir.iterdir()) else rows

        rows = wait_for(settled_rows, timeout=180, interval=0.2, what="every file to be settled")

        server = Htx(api_file, "api")
        health: list[Any] = []

        def answers() -> bool:
            try:
                health[:] = [httpx.get(f"{server.base_url}/healthz", timeout=2)]
            except httpx.HTTPError:
                return False
            return health[0].status_code == 200

        try:
            wait_for(answers, timeout=60, interval=0.2, what="the API to be healthy")
        except AssertionError:
            raise AssertionError(f"/healthz: {health[0].text if health else 'no answer'}") from None
        done = next(row for row in rows if row["status"] == "done")
        thumbnail = httpx.get(f"{server.base_url}/api/images/{done['id']}/thumbnails/small", timeout=10)
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert thumbnail.headers["etag"].startswith(f'"{done["sha256"][:16]}-small-')
        original = httpx.get(f"{server.base_url}/api/images/{done['id']}/original", timeout=10)
        assert hashlib.sha256(original.content).hexdigest() == done["sha256"]
        for daemon in running.values():
            assert daemon.stop() == 0, daemon.log()[-2000:]
    finally:
        for daemon in running.values():
            if daemon.process.poll() is None:
                daemon.kill()
        if server is not None:
            server.stop()

    assert sorted(row["sha256"] for row in rows) == sorted(digests)  # one record per content
    assert Counter(row["status"] for row in rows) == {"done": VALID, "failed": TRUNCATED}
    assert all(row["error_kind"] == "corrupt" for row in rows if row["status"] == "failed")
    worker_pids = {f"{os.uname().nodename}:{daemon.process.pid}" for daemon in everyone if daemon.log_path.name.startswith("worker")}
    assert worker_pids & {row["processed_by"] for row in rows}, "the thumbnails-only daemons processed nothing"
    for row in rows:
        assert _sha256(store, row["stored_path"]) == row["sha256"], row["filename"]
        if row["status"] == "done":
            assert store.exists(row["thumb_small_path"]) and store.exists(row["thumb_medium_path"])
    for config in (watcher, worker, api):
        assert _local_image_files(config) == [], config.data_dir
    # A kill between a commit and the removal of its incoming copy leaves that copy: no record
    # names it, and the sweep removes exactly those.
    named = {row["stored_path"] for row in rows}
    leftovers = {listed.key for listed in store.scan("incoming/")}
    assert not leftovers & named and not any(incoming_key(row["sha256"]) in named for row in rows)
    assert main(["--config", str(watcher_file), "storage", "gc", "--min-age-s", "0", "--delete"]) == 0
    assert {listed.key for part in PARTS for listed in store.scan(f"{part}/")} >= named
    assert not list(store.scan("incoming/"))
    logs = "".join(daemon.log() for daemon in everyone)
    assert "Traceback" not in logs, logs[-3000:]
