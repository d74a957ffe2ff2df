"""Several `htx daemon` processes on one database and one data folder, killed at random: every
file still ends as exactly one record. On PostgreSQL three daemons share the work; on SQLite
one daemon, killed and restarted, goes through the same queue."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from models import config as config_module
from models.config import Config
from models.db import make_engine
from models.tables import DaemonState, Image
from tests.daemon.fleet import Daemon
from tests.helpers import photo_bytes, read_images, wait_for, write_toml

VALID, TRUNCATED, DUPLICATED = 160, 30, 30


def fleet_config(folder: Path, database_url: str, **pipeline: object) -> tuple[Path, Config]:
    config_file = write_toml(
        folder / "htx.toml",
        {
            "paths": {"data_dir": str(folder / "data")},
            "database": {"url": database_url} if database_url else {},
            "watch": {"settle_ms": 200, "rescan_s": 2},
            "pipeline": {"workers": 2, "lease_s": 3, "max_attempts": 20} | pipeline,
            "caption": {"model": "none"},
        },
    )
    return config_file, config_module.load(config_file)


def drop_files(inbox: Path, source: Path) -> set[str]:
    """Valid photos, truncated copies of others, and duplicates under new names: the digests
    the records must end up with (one per distinct content)."""
    inbox.mkdir(parents=True, exist_ok=True)
    staging = inbox.parent / "staging"
    staging.mkdir(exist_ok=True)
    originals = []
    for number in range(VALID + TRUNCATED):
        data = photo_bytes(number, size=(640, 480))
        if number >= VALID:
            data = data[: len(data) // 2]
        path = staging / f"photo-{number:03}.jpg"
        path.write_bytes(data)
        originals.append(path)
    for number, path in enumerate(originals[:DUPLICATED]):
        shutil.copyfile(path, staging / f"copy-{number:03}.jpg")
    digests = {hashlib.sha256(path.read_bytes()).hexdigest() for path in staging.iterdir()}
    for path in sorted(staging.iterdir()):
        path.rename(inbox / path.name)
    staging.rmdir()
    return digests


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


def all_settled(config: Config, expected: int) -> list[dict] | None:
    rows = read_images(config)
    if len(rows) != expected or any(row["status"] not in ("done", "failed") or row["stage"] is not None for row in rows):
        return None
    if any(config.inbox_dir.iterdir()):
        return None
    return rows


@pytest.mark.parametrize(("backend", "daemons"), [("postgresql", 3), ("sqlite", 1)], indirect=["backend"])
def test_killed_workers_lose_nothing_and_duplicate_nothing(
    backend: str, daemons: int, database_url: str, tmp_path: Path
) -> None:
    config_file, config = fleet_config(tmp_path, database_url)
    running = [Daemon(config_file, f"daemon-{number}") for number in range(daemons)]
    everyone = list(running)
    try:
        wait_for(lambda: all("watch" in d.log() or "process" in d.log() for d in running), timeout=60, what="the daemons to start")
        digests = drop_files(config.inbox_dir, tmp_path)
        rng = random.Random(12)
        kills = 0
        # Kill a daemon whenever the work is under way, and start another in its place.
        while kills < 6:
            done = sum(row["status"] in ("done", "failed") for row in read_images(config))
            if done >= len(digests) - 20:
                break
            wait_for(
                lambda: sum(row["status"] in ("done", "failed") for row in read_images(config)) > done + rng.randint(3, 15),
                timeout=60,
                interval=0.01,
                what="progress before the next kill",
            )
            # A daemon in the middle of an image: its claim is cut short, to be taken over.
            victim = wait_for(
                lambda: next((daemon for daemon in running if daemon.process.pid in claim_holders(config)), None),
                timeout=30,
                interval=0.002,
                what="a daemon holding a claim",
            )
            running.remove(victim)
            victim.kill()
            kills += 1
            replacement = Daemon(config_file, f"daemon-{len(everyone)}")
            running.append(replacement)
            everyone.append(replacement)
        assert kills >= 3, "the work finished before enough kills"

        rows = wait_for(lambda: all_settled(config, len(digests)), timeout=180, interval=0.2, what="every file to be settled")
        for daemon in running:
            assert daemon.stop() == 0, daemon.log()[-2000:]
    finally:
        for daemon in running:
            if daemon.process.poll() is None:
                daemon.kill()

    assert sorted(row["sha256"] for row in rows) == sorted(digests)  # one record per content
    statuses = Counter(row["status"] for row in rows)
    assert statuses == {"done": VALID, "failed": TRUNCATED}, statuses
    assert all(row["error_kind"] == "corrupt" for row in rows if row["status"] == "failed")
    done = {row["sha256"] for row in rows if row["status"] == "done"}
    thumbnails = {path.name for path in (config.data_dir / "thumbnails").rglob("*") if path.is_file() and not path.name.startswith(".")}
    assert thumbnails == {f"{sha}-{size}.jpg" for sha in done for size in ("small", "medium")}
    assert {path.name.split(".")[0] for path in (config.data_dir / "originals").rglob("*.jpg")} == done
    workers = Counter(row["processed_by"] for row in rows)
    assert len(workers) >= daemons + 1, workers  # shared, and the replacements took part
    # The claims the kills cut short were given to another worker, and counted.
    assert any(row["attempts"] >= 1 for row in rows), "no claim was lost to a kill"
    logs = "".join(daemon.log() for daemon in everyone)
    assert "Traceback" not in logs, logs[-3000:]


@contextmanager
def watcher_and_standby(database_url: str, folder: Path) -> Iterator[tuple[Config, Daemon, Daemon]]:
    """Two daemons: the first watches the inbox, the second stands by; both gone after."""
    config_file, config = fleet_config(folder, database_url)
    first = Daemon(config_file, "first")
    wait_for(lambda: "watching" in first.log(), what="the first daemon to watch")
    second = Daemon(config_file, "second")
    try:
        wait_for(lambda: "another process watches the inbox" in second.log(), what="the second to stand by")
        yield config, first, second
    finally:
        for daemon in (first, second):
            if daemon.process.poll() is None:
                daemon.process.send_signal(signal.SIGCONT)
                daemon.kill()


def test_when_the_watching_daemon_dies_another_takes_the_inbox(postgres_cluster, tmp_path: Path) -> None:
    with watcher_and_standby(postgres_cluster.new_database(), tmp_path) as (config, first, second):
        first.kill()
        wait_for(lambda: "watching" in second.log(), timeout=15, what="the second daemon to take the inbox")
        config.inbox_dir.mkdir(parents=True, exist_ok=True)
        for number in range(5):
            (config.inbox_dir / f"after-{number}.jpg").write_bytes(photo_bytes(number, size=(200, 150)))
        wait_for(lambda: all_settled(config, 5), timeout=30, what="the files dropped after the kill")
        assert {row["processed_by"] for row in read_images(config)} == {f"{os.uname().nodename}:{second.process.pid}"}
        assert second.stop() == 0


def test_when_the_watching_daemon_freezes_another_takes_the_inbox_and_the_frozen_one_registers_nothing(
    postgres_cluster, tmp_path: Path
) -> None:
    """SIGSTOP keeps a session (and any lock it holds) alive: only a lease the watcher renews
    lets a standby see that intake stopped."""
    with watcher_and_standby(postgres_cluster.new_database(), tmp_path) as (config, first, second):
        first.process.send_signal(signal.SIGSTOP)
        try:
            for number in range(8):
                (config.inbox_dir / f"frozen-{number}.jpg").write_bytes(photo_bytes(number, size=(200, 150)))
            wait_for(lambda: "watching" in second.log(), timeout=20, what="the second daemon to take the inbox")
            wait_for(lambda: all_settled(config, 8), timeout=60, what="the files dropped while the watcher was frozen")
        finally:
            first.process.send_signal(signal.SIGCONT)
        wait_for(lambda: "another process took the watch" in first.log(), timeout=20, what="the first to learn it lost the watch")
        for number in range(8, 12):
            (config.inbox_dir / f"after-{number}.jpg").write_bytes(photo_bytes(number, size=(200, 150)))
        rows = wait_for(lambda: all_settled(config, 12), timeout=60, what="the files dropped after it woke")
        assert first.stop() == 0 and second.stop() == 0
    assert sorted(row["filename"] for row in rows) == sorted(
        [f"frozen-{number}.jpg" for number in range(8)] + [f"after-{number}.jpg" for number in range(8, 12)]
    )
    assert {row["status"] for row in rows} == {"done"}
    assert len({row["sha256"] for row in rows}) == 12
    assert "Traceback" not in first.log() + second.log()
    assert first.log().count("watching ") == 1  # it stood by after waking, and did not flap back


def test_a_thumbnails_worker_and_a_captions_worker_make_complete_records(
    postgres_cluster, tiny_blip: Path, tmp_path: Path
) -> None:
    url = postgres_cluster.new_database()
    caption = {"model": str(tiny_blip), "dtype": "float32", "max_new_tokens": 5, "batch_size": 2, "batch_wait_ms": 100}
    thumbnails_file = write_toml(
        tmp_path / "thumbnails.toml",
        {
            "paths": {"data_dir": str(tmp_path / "data")},
            "database": {"url": url},
            "watch": {"settle_ms": 200, "rescan_s": 0},
            "pipeline": {"workers": 2, "roles": ["watch", "thumbnails"]},
            "caption": caption,
        },
    )
    captions_file = write_toml(
        tmp_path / "captions.toml",
        {
            "paths": {"data_dir": str(tmp_path / "data")},
            "database": {"url": url},
            "pipeline": {"roles": ["captions"]},
            "caption": caption,
        },
    )
    config = config_module.load(thumbnails_file)
    thumbnailer = Daemon(thumbnails_file, "thumbnails")
    captioner = Daemon(captions_file, "captions")
    try:
        wait_for(lambda: "watching" in thumbnailer.log() and "processing" in captioner.log(), timeout=60, what="both to start")
        config.inbox_dir.mkdir(parents=True, exist_ok=True)
        for number in range(4):
            (config.inbox_dir / f"photo-{number}.jpg").write_bytes(photo_bytes(number, size=(320, 240)))
        rows = wait_for(lambda: all_settled(config, 4), timeout=120, what="four complete records")
        assert thumbnailer.stop() == 0 and captioner.stop() == 0
    finally:
        for daemon in (thumbnailer, captioner):
            if daemon.process.poll() is None:
                daemon.kill()
    for row in rows:
        assert row["status"] == "done" and row["stage"] is None
        assert row["caption"] and row["caption_model"] == tiny_blip.name and row["caption_error"] is None
        assert (config.data_dir / row["thumb_small_path"]).is_file() and (config.data_dir / row["stored_path"]).is_file()
        assert row["processed_by"] == f"{os.uname().nodename}:{captioner.process.pid}"
        assert row["metadata_ms"] is not None and row["caption_ms"] is not None
        assert row["processing_ms"] >= row["caption_ms"]


def _burst(inbox: Path, first: int, count: int) -> set[str]:
    """`count` photos renamed into the inbox at once; their digests."""
    staging = inbox.parent / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    inbox.mkdir(parents=True, exist_ok=True)
    digests = set()
    for number in range(first, first + count):
        data = photo_bytes(number, size=(640, 480))
        digests.add(hashlib.sha256(data).hexdigest())
        (staging / f"burst-{number:03}.jpg").write_bytes(data)
    for path in sorted(staging.iterdir()):
        path.rename(inbox / path.name)
    return digests


def _done(config: Config) -> int:
    try:
        return sum(row["status"] == "done" for row in read_images(config))
    except Exception:  # noqa: BLE001 - the server is down: nothing to count now
        return -1


def test_a_fleet_rides_out_restarts_and_stops_of_its_database_and_a_frozen_worker(
    own_postgres_cluster, tmp_path: Path
) -> None:
    """The operator's run: two daemons and an API on PostgreSQL; the server restarted in the
    middle of a burst, then stopped for 10 s in the middle of another, then a daemon frozen past
    two leases while a third arrives. Nobody restarts anything by hand, and every file ends as
    exactly one done record with its original and thumbnails."""
    import httpx

    from tests.api.live import Htx, free_port

    cluster = own_postgres_cluster
    config_file = write_toml(
        tmp_path / "htx.toml",
        {
            "paths": {"data_dir": str(tmp_path / "data")},
            "database": {"url": cluster.new_database()},
            "watch": {"settle_ms": 200, "rescan_s": 2},
            "pipeline": {"workers": 1, "lease_s": 6},
            "caption": {"model": "none"},
            "api": {"port": free_port()},
        },
    )
    config = config_module.load(config_file)
    daemons = [Daemon(config_file, f"daemon-{number}") for number in range(2)]
    api = Htx(config_file, "api")
    health_while_down: list[int] = []
    try:
        api.wait_healthy()
        digests = _burst(config.inbox_dir, 0, 40)
        wait_for(lambda: _done(config) >= 5, timeout=60, interval=0.05, what="the first burst under way")
        cluster.restart("fast")
        wait_for(lambda: _done(config) == 40, timeout=90, what="the first burst after a restart")

        digests |= _burst(config.inbox_dir, 40, 40)
        wait_for(lambda: _done(config) >= 45, timeout=60, interval=0.05, what="the second burst under way")
        cluster.pause()
        stopped_at = time.monotonic()
        while time.monotonic() - stopped_at < 10:
            try:
                health_while_down.append(httpx.get(f"{api.base_url}/healthz", timeout=5).status_code)
            except httpx.HTTPError:
                health_while_down.append(0)
            time.sleep(0.5)  # the length of the outage, not a wait for something to happen
        cluster.resume()
        wait_for(lambda: _done(config) == 80, timeout=90, what="the second burst after a 10 s stop")

        digests |= _burst(config.inbox_dir, 80, 40)
        # A daemon in the middle of an image: its claim must lapse and be taken over.
        frozen = wait_for(
            lambda: next((daemon for daemon in daemons if daemon.process.pid in claim_holders(config)), None),
            timeout=30,
            interval=0.002,
            what="a daemon holding a claim",
        )
        frozen.process.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            wait_for(lambda: time.monotonic() - frozen_at >= 15, timeout=30, what="two leases to pass")
        finally:
            frozen.process.send_signal(signal.SIGCONT)
        rows = wait_for(lambda: all_settled(config, len(digests)), timeout=120, interval=0.2, what="every file to be settled")
        assert api.wait_healthy()["status"] == "ok"
        for daemon in daemons:
            assert daemon.process.poll() is None, daemon.log()[-2000:]  # none died, none was restarted
            assert daemon.stop() == 0, daemon.log()[-2000:]
    finally:
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.process.send_signal(signal.SIGCONT)
                daemon.kill()
        api.stop()

    assert sorted(row["sha256"] for row in rows) == sorted(digests)
    assert Counter(row["status"] for row in rows) == {"done": 120}
    thumbnails = {path.name for path in (config.data_dir / "thumbnails").rglob("*") if path.is_file() and not path.name.startswith(".")}
    assert thumbnails == {f"{sha}-{size}.jpg" for sha in digests for size in ("small", "medium")}
    assert {path.name.split(".")[0] for path in (config.data_dir / "originals").rglob("*.jpg")} == digests
    assert 503 in health_while_down and 200 not in health_while_down, health_while_down
    for daemon in daemons:
        said = daemon.log()
        assert "Traceback" not in said, said[-3000:]
        warnings = [line for line in said.splitlines() if "WARNING" in line or "ERROR" in line]
        assert len(warnings) <= 20, "\n".join(warnings)  # a few lines per episode, not one per image
    api_said = api.log()
    assert "Traceback" not in api_said, api_said[-3000:]
