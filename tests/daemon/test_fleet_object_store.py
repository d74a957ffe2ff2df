"""Daemons that share nothing but a database and a bucket (a real SeaweedFS): each machine has a
data folder of its own, the watching daemon puts what it registers in the bucket, and any daemon
fetches, processes and stores it there. Killed at random, the fleet still ends with exactly one
record per content, every object in the bucket with the bytes of its record, and nothing of the
images in any local folder. A store that goes away for 30 s holds the images back and fails none:
/healthz says so, and all are done once it is back."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from models import config as config_module
from models.config import Config
from models.db import make_engine
from models.store import INCOMING, PARTS, Store, note_key
from models.stores import open_store
from models.tables import DaemonState, Image
from tests.api.live import REPO, Htx, free_port
from tests.conftest import s3_storage, started_object_store
from tests.daemon.fleet import Daemon as FleetDaemon
from tests.helpers import photo_bytes, read_images, wait_for, write_toml
from tests.seaweedfs import ThrowawayObjectStore

NODE = os.uname().nodename
PHOTO_SIZE = (480, 360)


class Daemon(FleetDaemon):
    """One `htx daemon` process of a kind ("watcher", "worker"), its output in a log of its own."""

    def __init__(self, config_file: Path, kind: str, number: int) -> None:
        self.kind = kind
        self.config_file = config_file
        super().__init__(config_file, f"{kind}-{number}")

    @property
    def processed_by(self) -> str:
        return f"{NODE}:{self.process.pid}"


def machine_config(folder: Path, database_url: str, storage: dict[str, Any], **pipeline: Any) -> tuple[Path, Config]:
    """The config file of one machine: a data folder (and inbox) of its own, the shared database
    and bucket."""
    folder.mkdir(parents=True, exist_ok=True)
    s3 = dict(storage["s3"])
    config_file = write_toml(
        folder / "htx.toml",
        {
            "paths": {"data_dir": str(folder / "data")},
            "database": {"url": database_url},
            "watch": {"settle_ms": 200, "rescan_s": 2},
            "pipeline": {"workers": 2, "lease_s": 3, "max_attempts": 20} | pipeline,
            "caption": {"model": "none"},
            "api": {"port": free_port()},
            "storage": {"backend": storage["backend"]},
            "storage.s3": s3,
        },
    )
    return config_file, config_module.load(config_file)


def drop_burst(
    inbox: Path, first: int, valid: int, truncated: int, duplicated: int, keep: dict[str, bytes] | None = None
) -> tuple[set[str], set[str]]:
    """Valid photos, truncated copies of others and duplicates under new names, renamed into the
    inbox at once; the digests of the valid contents and of the truncated ones."""
    inbox.mkdir(parents=True, exist_ok=True)
    staging = inbox.parent / f"staging-{first}"
    staging.mkdir()
    made = []
    good, broken = set(), set()
    for number in range(first, first + valid + truncated):
        data = photo_bytes(number, size=PHOTO_SIZE)
        if number >= first + valid:
            data = data[: len(data) // 2]
        sha256 = hashlib.sha256(data).hexdigest()
        (broken if number >= first + valid else good).add(sha256)
        if keep is not None and number < first + valid:
            keep[sha256] = data
        path = staging / f"photo-{number:03}.jpg"
        path.write_bytes(data)
        made.append(path)
    # Copies of valid photos and of truncated ones alike.
    for number, path in enumerate(made[:: max(1, len(made) // duplicated)][:duplicated]):
        shutil.copyfile(path, staging / f"copy-{first + number:03}.jpg")
    for path in sorted(staging.iterdir()):
        path.rename(inbox / path.name)
    staging.rmdir()
    return good, broken


def claim_holders(config: Config) -> set[int]:
    """The pids of the daemons holding a claim right now."""
    engine = make_engine(config.database_url, readonly=True)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(DaemonState.pid).join(Image, Image.claimed_by == DaemonState.id).where(Image.status == "processing")
            ).all()
    finally:
        engine.dispose()
    return {row.pid for row in rows}


def settled_count(config: Config) -> int:
    return sum(row["status"] in ("done", "failed") for row in read_images(config))


def all_settled(config: Config, expected: int) -> list[dict[str, Any]] | None:
    rows = read_images(config)
    if len(rows) != expected or any(row["status"] not in ("done", "failed") or row["stage"] is not None for row in rows):
        return None
    return None if any(config.inbox_dir.iterdir()) else rows


def bucket_keys(store: Store) -> set[str]:
    return {listed.key for part in PARTS for listed in store.scan(f"{part}/")}


def object_sha256(store: Store, key: str) -> str:
    with store.open(key) as stored:
        return hashlib.sha256(stored.reader.read()).hexdigest()


def referenced_keys(rows: list[dict[str, Any]]) -> set[str]:
    """Every object the records name: originals and failed copies, notes, thumbnails."""
    keys = set()
    for row in rows:
        keys.add(row["stored_path"])
        if row["status"] == "failed":
            keys.add(note_key(row["stored_path"]))
        keys.update(row[name] for name in ("thumb_small_path", "thumb_medium_path") if row[name])
    return keys


def assert_objects_in_the_bucket(store: Store, rows: list[dict[str, Any]]) -> None:
    """Each record's objects are there, with its bytes: an original (or failed copy and its note)
    of its sha256, and both thumbnails of a done image."""
    keys = bucket_keys(store)
    for row in rows:
        assert row["stored_path"] in keys, row
        assert object_sha256(store, row["stored_path"]) == row["sha256"], row["filename"]
        if row["status"] == "done":
            assert row["stored_path"].startswith("originals/"), row
            assert {row["thumb_small_path"], row["thumb_medium_path"]} <= keys, row
            assert row["thumb_small_path"].startswith("thumbnails/") and row["thumb_medium_path"].startswith("thumbnails/")
        else:
            assert row["stored_path"].startswith("failed/"), row
            with store.open(note_key(row["stored_path"])) as note:
                assert row["sha256"] in note.reader.read().decode(), row["filename"]


def local_image_files(config: Config) -> list[Path]:
    """Files of the images in a machine's own data folder: there must be none."""
    folders = [config.data_dir / part for part in ("originals", "thumbnails", "failed")]
    return [path for folder in folders if folder.exists() for path in folder.rglob("*") if path.is_file()]


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


def gc_exists(config_file: Path) -> bool:
    """Whether this tree has `htx storage gc` yet."""
    probe = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config_file), "storage", "gc", "--help"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    return probe.returncode == 0


def assert_leftover_incoming_is_garbage(store: Store, rows: list[dict[str, Any]], config_file: Path) -> None:
    """Once all is settled nothing should be left in incoming/; a kill (or a store that went away)
    between a commit and the removal of the incoming copy may leave one: no record names it, and
    `htx storage gc` (where it exists) removes it, and nothing a record names."""
    named = referenced_keys(rows)
    leftovers = {listed.key for listed in store.scan(f"{INCOMING}/")}
    assert not leftovers & named, leftovers & named
    assert not any(row["stored_path"].startswith(f"{INCOMING}/") for row in rows)
    if not leftovers or not gc_exists(config_file):
        return
    before = bucket_keys(store)
    swept = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config_file), "storage", "gc", "--delete", "--min-age-s", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert swept.returncode == 0, swept.stdout + swept.stderr
    removed = before - bucket_keys(store)
    assert leftovers <= removed, (leftovers, removed)
    assert not removed & named, removed & named


def wait_healthy(api: Htx, timeout: float = 60) -> dict[str, Any]:
    """/healthz answering 200 with a daemon running; the last answer says why not, if not."""
    last: list[object] = []

    def healthy() -> dict[str, Any] | None:
        assert api.process.poll() is None, api.log()[-2000:]
        try:
            answer = httpx.get(f"{api.base_url}/healthz", timeout=20)
        except httpx.HTTPError as error:
            last[:] = [repr(error)]
            return None
        body = answer.json()
        last[:] = [answer.status_code, body]
        return body if answer.status_code == 200 and body["daemon"] == "running" else None

    try:
        return wait_for(healthy, timeout=timeout, interval=0.2, what="/healthz to answer 200")
    except AssertionError as error:
        raise AssertionError(f"{error}; last answer: {last}") from None


def assert_no_traceback(*logs: str) -> None:
    for said in logs:
        assert "Traceback" not in said, said[-3000:]


def test_a_fleet_with_no_shared_folder_killed_at_random_loses_nothing_and_duplicates_nothing(
    postgres_cluster, object_store_server, tmp_path: Path
) -> None:
    """A watching daemon and a thumbnails-only daemon, each on a data folder of its own, and an
    API on a third: the same database and bucket, nothing else shared. Daemons of both kinds are
    SIGKILLed while they hold claims, and replaced."""
    url = postgres_cluster.new_database()
    storage = s3_storage(object_store_server, f"{tmp_path.name}-fleet")
    watcher_file, watcher = machine_config(tmp_path / "a", url, storage)
    worker_file, worker = machine_config(tmp_path / "b", url, storage, roles=["thumbnails"])
    api_file, api_config = machine_config(tmp_path / "api", url, storage)
    store = open_store(watcher)
    files = {"watcher": watcher_file, "worker": worker_file}
    started = Counter({"watcher": 1, "worker": 1})
    running = {"watcher": Daemon(watcher_file, "watcher", 0), "worker": Daemon(worker_file, "worker", 0)}
    everyone = list(running.values())
    api = Htx(api_file, "api")
    try:
        wait_for(lambda: "watching" in running["watcher"].log() and "not watching" in running["worker"].log(),
                 timeout=60, what="both daemons to start")
        wait_healthy(api)
        good, broken = drop_burst(watcher.inbox_dir, 0, valid=70, truncated=10, duplicated=12)
        expected = len(good) + len(broken)
        rng = random.Random(2024)
        kills = Counter()
        # Each kind in turn: a daemon in the middle of an image, its claim cut short.
        for kind in ("worker", "watcher", "worker", "watcher"):
            settled = settled_count(watcher)
            if settled >= expected - 10:
                break
            step = rng.randint(2, 8)
            wait_for(lambda target=settled + step: settled_count(watcher) >= target, timeout=60, interval=0.01, what="progress before the next kill")
            victim = running[kind]
            wait_for(lambda pid=victim.process.pid: pid in claim_holders(watcher), timeout=30, interval=0.002, what=f"the {kind} to hold a claim")
            victim.kill()
            kills[kind] += 1
            running[kind] = Daemon(files[kind], kind, started[kind])
            started[kind] += 1
            everyone.append(running[kind])
        assert sum(kills.values()) >= 3 and set(kills) == {"watcher", "worker"}, f"the work finished before enough kills: {kills}"

        rows = wait_for(lambda: all_settled(watcher, expected), timeout=120, interval=0.2, what="every file to be settled")

        # The API, on a data folder of its own, serves what the daemons put in the bucket.
        done = next(row for row in rows if row["status"] == "done")
        thumbnail = httpx.get(f"{api.base_url}/api/images/{done['id']}/thumbnails/small", timeout=15)
        assert thumbnail.status_code == 200, thumbnail.text
        assert thumbnail.headers["content-type"] == "image/jpeg"
        etag = thumbnail.headers["etag"]
        assert etag.startswith(f'"{done["sha256"][:16]}-small-'), etag
        assert hashlib.sha256(thumbnail.content).hexdigest() == object_sha256(store, done["thumb_small_path"])
        again = httpx.get(f"{api.base_url}/api/images/{done['id']}/thumbnails/small", headers={"If-None-Match": etag}, timeout=15)
        assert again.status_code == 304
        original = httpx.get(f"{api.base_url}/api/images/{done['id']}/original", timeout=15)
        assert original.status_code == 200
        assert hashlib.sha256(original.content).hexdigest() == done["sha256"]
        assert original.headers["etag"] == f'"{done["sha256"]}"'

        for daemon in running.values():
            assert daemon.stop() == 0, daemon.log()[-2000:]
    finally:
        for daemon in running.values():
            if daemon.process.poll() is None:
                daemon.kill()
        api.stop()

    assert sorted(row["sha256"] for row in rows) == sorted(good | broken)  # one record per content
    assert Counter(row["status"] for row in rows) == {"done": len(good), "failed": len(broken)}
    assert {row["sha256"] for row in rows if row["status"] == "done"} == good
    assert {row["error_kind"] for row in rows if row["status"] == "failed"} == {"corrupt"}
    workers = {daemon.processed_by for daemon in everyone if daemon.kind == "worker"}
    processed_by = Counter(row["processed_by"] for row in rows)
    assert workers & set(processed_by), processed_by  # the daemon without the inbox took part
    assert any(row["attempts"] >= 1 for row in rows), "no claim was lost to a kill"

    assert_objects_in_the_bucket(store, rows)
    for config in (watcher, worker, api_config):
        assert local_image_files(config) == [], config.data_dir
    for config in (watcher, worker):
        # Fetched copies are removed after their job, and a killed process's at the next start.
        # A fetch a kill cut short leaves its temporary; the replacement's start removes it.
        assert files_under(config.work_dir) == []
    assert_leftover_incoming_is_garbage(store, rows, api_file)
    assert_no_traceback(*(daemon.log() for daemon in everyone), api.log())


@pytest.fixture
def own_object_store() -> Iterator[ThrowawayObjectStore]:
    """A SeaweedFS of the test's own, which it may kill and start again."""
    server = started_object_store()
    yield server
    server.stop()


OUTAGE_S = 30.0


def _health(api: Htx) -> tuple[int, str | None]:
    try:
        answer = httpx.get(f"{api.base_url}/healthz", timeout=20)
    except httpx.HTTPError as error:
        return 0, type(error).__name__
    return answer.status_code, answer.json().get("problem")


def test_a_store_down_for_30_s_mid_burst_holds_the_images_back_and_fails_none(own_object_store, tmp_path: Path) -> None:
    """SeaweedFS killed in the middle of a burst, down for 30 s while more files arrive, then
    started again on its ports and data: /healthz says what is wrong meanwhile, no image fails
    for it, and every valid file is done once the store is back. SQLite, one daemon, an API on a
    data folder of its own."""
    server = own_object_store
    storage = s3_storage(server, "outage")
    storage["s3"]["timeout_s"] = 2.0
    url = f"sqlite:///{tmp_path / 'daemon' / 'data' / 'htx.db'}"
    daemon_file, config = machine_config(tmp_path / "daemon", url, storage)
    api_file, _ = machine_config(tmp_path / "api", url, storage)
    store = open_store(config)
    daemon = Daemon(daemon_file, "watcher", 0)
    api = Htx(api_file, "api")
    health: list[tuple[float, int, str | None]] = []
    try:
        wait_for(lambda: "watching" in daemon.log(), timeout=60, what="the daemon to watch")
        wait_healthy(api)
        contents: dict[str, bytes] = {}
        good, broken = drop_burst(config.inbox_dir, 0, valid=50, truncated=6, duplicated=6, keep=contents)
        wait_for(lambda: settled_count(config) >= 8, timeout=60, interval=0.02, what="the burst under way")
        server.kill()
        down_at = time.monotonic()
        assert settled_count(config) < len(good) + len(broken), "the burst was over before the store went"
        # More files while it is down: they wait in the inbox, none is lost or failed.
        more_good, more_broken = drop_burst(config.inbox_dir, 100, valid=15, truncated=2, duplicated=3)
        good, broken = good | more_good, broken | more_broken
        # And copies of images done before it went: duplicates, known only by asking the store.
        done_before = [row for row in read_images(config) if row["status"] == "done"][:3]
        assert done_before, "nothing done before the store went"
        for row in done_before:
            (config.inbox_dir.parent / "again.tmp").write_bytes(contents[row["sha256"]])
            (config.inbox_dir.parent / "again.tmp").rename(config.inbox_dir / f"again-{row['id']}.jpg")
        while (elapsed := time.monotonic() - down_at) < OUTAGE_S:  # the outage itself: a deadline
            status, problem = _health(api)
            health.append((elapsed, status, problem))
            failed = [row for row in read_images(config) if row["status"] == "failed"]
            assert all(row["sha256"] in broken and row["error_kind"] == "corrupt" for row in failed), failed
            assert daemon.process.poll() is None, daemon.log()[-2000:]
            time.sleep(0.5)  # the pace of the checks, not a wait for something to happen
        down = [(status, problem) for _, status, problem in health]
        first_503 = next((at for at, status, problem in health if status == 503 and problem), None)
        assert first_503 is not None and first_503 < 20, health
        assert all(status == 503 and problem for at, status, problem in health if at >= first_503), down
        server.start()
        expected = len(good) + len(broken)
        rows = wait_for(lambda: all_settled(config, expected), timeout=90, interval=0.2, what="every file, once the store is back")
        wait_healthy(api, timeout=30)
        assert daemon.stop() == 0, daemon.log()[-2000:]
    finally:
        if daemon.process.poll() is None:
            daemon.kill()
        api.stop()

    assert sorted(row["sha256"] for row in rows) == sorted(good | broken)
    assert {row["sha256"] for row in rows if row["status"] == "done"} == good
    assert {row["sha256"] for row in rows if row["status"] == "failed"} == broken
    assert {row["error_kind"] for row in rows if row["status"] == "failed"} == {"corrupt"}
    assert_objects_in_the_bucket(store, rows)
    assert local_image_files(config) == [] and files_under(config.work_dir) == []
    assert_leftover_incoming_is_garbage(store, rows, api_file)
    said = daemon.log()
    errors = [line for line in said.splitlines() if line.startswith("ERROR")]
    assert errors == [], errors  # a store that went away is a fault waited out, never an error
    assert_no_traceback(said, api.log())
    assert "object store" in said  # the daemon said what it waited for
    warnings = [line for line in said.splitlines() if "WARNING" in line or "ERROR" in line]
    assert len(warnings) <= 20, "\n".join(warnings)  # a few lines for the outage, not one per image
