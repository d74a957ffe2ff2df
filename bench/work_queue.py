"""Benchmark of the work queue (not a test): the queue must never be what limits a fleet.

    .venv/bin/python bench/work_queue.py [--rows 20000] [--seconds 5] [--images 120]

(Not bench/queue.py: in bench/, that name would hide the standard library's `queue` from the
other benchmarks, which import it through psycopg, logging and concurrent.futures.)

In one run:
  (a) claims per second with no-op work, through daemon.database.work_queue's own statements and the
      daemon's DatabaseWriter (claim one image, record it done with `finish`, each a statement
      of its own): on PostgreSQL (a
      throwaway cluster of tests/postgres.py) with 1, 2 and 4 claimer processes, each with
      its own connection, as a fleet's daemons are; on SQLite with one, as its one daemon
      writes through one thread. Also caption-style claims of 8 at a time.
  (b) images per second through real `htx daemon` processes on PostgreSQL, thumbnails
      only, one process against two (each with one pipeline worker), on the same files.
Prints the figures with the machine's core count; PostgreSQL is skipped, saying why, when no
server can start here.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.database import records, work_queue  # noqa: E402
from daemon.database.writer import DatabaseWriter  # noqa: E402
from models import config as config_module  # noqa: E402
from models import migrate  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.tables import Image  # noqa: E402
from tests.helpers import photo_bytes, read_images, wait_for, write_toml  # noqa: E402
from tests.postgres import started_or_none  # noqa: E402

images = Image.__table__
DONE = {"status": "done", "processed_at": datetime(2026, 12, 1), "processing_ms": 1.0}


def seed(engine: Engine, rows: int) -> None:
    for start in range(0, rows, 5000):
        with engine.begin() as connection:
            connection.execute(
                insert(images),
                [
                    {"sha256": f"{number:064x}", "filename": f"{number}.jpg", "status": "pending",
                     "received_at": datetime(2026, 12, 1), "size_bytes": 1, "hash_ms": 0.1}
                    for number in range(start, min(rows, start + 5000))
                ],
            )
    if engine.dialect.name == "postgresql":
        # What autovacuum does within a minute of a burst: without statistics the planner
        # takes the table for empty and sorts every pending row at each claim.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE images"))


def claimer(url: str, number: int, deadline: float, batch: int, counts: Any) -> None:
    """One worker process: claim `batch` images, record each done, until `deadline`, through
    a DatabaseWriter as a daemon does."""
    engine = make_engine(url)
    writer = DatabaseWriter(engine)
    writer.start()
    worker = writer.call(work_queue.register_worker, host="bench", pid=os.getpid(), roles="thumbnails", started_at=records.utcnow())
    done = 0
    while time.time() < deadline:
        claims = writer.call_statement(work_queue.claim, worker, stage=work_queue.PREPARE, limit=batch, lease_s=60)
        if not claims:
            break
        for claim in claims:
            assert writer.call_statement(work_queue.finish, worker, claim.image.id, DONE)
        done += len(claims)
    counts[number] = done
    writer.stop()
    engine.dispose()


def claimers(url: str, processes: int, seconds: float, batch: int) -> float:
    """Images claimed and recorded per second by `processes` claimer processes (a fleet's
    workers are processes, each with its own connection; threads would share one GIL)."""
    context = multiprocessing.get_context("fork")
    counts = context.Array("l", processes)
    started = time.time()
    deadline = started + seconds
    running = [context.Process(target=claimer, args=(url, number, deadline, batch, counts)) for number in range(processes)]
    for process in running:
        process.start()
    for process in running:
        process.join()
    return sum(counts) / (time.time() - started)


def bench_claims(url: str, rows: int, seconds: float, threads: list[int]) -> dict[str, float]:
    results = {}
    for count in threads:
        for batch in (1, 8):
            engine = make_engine(url)
            migrate.upgrade(engine)
            with engine.begin() as connection:
                connection.execute(images.delete())
            seed(engine, rows)
            engine.dispose()
            results[f"{count} process(es), {batch} per claim"] = claimers(url, count, seconds, batch)
    return results


def daemon_throughput(url: str, processes: int, files: list[bytes], work: Path) -> float:
    """Images per second for `processes` `htx daemon` on the same database and data folder,
    thumbnails only, one pipeline worker each: from the files' arrival in the inbox (all
    daemons started) to every record done."""
    folder = Path(tempfile.mkdtemp(dir=work))
    config_file = write_toml(
        folder / "htx.toml",
        {
            "paths": {"data_dir": str(folder / "data")},
            "database": {"url": url},
            "watch": {"settle_ms": 100, "rescan_s": 0},
            "pipeline": {"workers": 1, "roles": ["watch", "thumbnails"]},
            "caption": {"model": "none"},
        },
    )
    config = config_module.load(config_file)
    staging = folder / "staging"
    staging.mkdir()
    for number, data in enumerate(files):
        (staging / f"photo-{number:04}.jpg").write_bytes(data)
    command = [sys.executable, "-m", "daemon.cli", "--config", str(config_file), "daemon"]
    logs = [folder / f"daemon-{number}.log" for number in range(processes)]
    running = [
        subprocess.Popen(command, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT) for log in logs
    ]
    try:
        wait_for(lambda: all("watching" in log.read_text() or "processes" in log.read_text() for log in logs), timeout=60, what="the daemons to start")
        started = time.perf_counter()
        for path in sorted(staging.iterdir()):
            path.rename(config.inbox_dir / path.name)
        wait_for(
            lambda: sum(row["status"] == "done" for row in read_images(config)) == len(files),
            timeout=600,
            interval=0.05,
            what="every image to be done",
        )
        elapsed = time.perf_counter() - started
    finally:
        for process in running:
            process.terminate()
        for process in running:
            process.wait()
    shared = {row["processed_by"] for row in read_images(config)}
    shutil.rmtree(folder, ignore_errors=True)
    if len(shared) != processes:
        print(f"    (the work went to {len(shared)} of {processes} process(es))")
    return len(files) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000, help="pending images seeded per claim run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each claim run")
    parser.add_argument("--images", type=int, default=120, help="images for the daemon runs")
    args = parser.parse_args()
    print(f"work queue benchmark on {os.cpu_count()} CPU core(s)")
    work = Path(tempfile.mkdtemp(prefix="htx-queue-bench-"))
    cluster = started_or_none()
    try:
        print("(a) claims per second, no-op work (claim, then finish: two statements per image, each its own transaction)")
        if cluster is not None:
            for label, rate in bench_claims(cluster.new_database("queue"), args.rows, args.seconds, [1, 2, 4]).items():
                print(f"    postgresql  {label:<30}{rate:>10,.0f} /s")
        for label, rate in bench_claims(f"sqlite:///{work / 'queue.db'}", args.rows, args.seconds, [1]).items():
            print(f"    sqlite      {label:<30}{rate:>10,.0f} /s")
        if cluster is not None:
            files = [photo_bytes(number, size=(1600, 1200)) for number in range(args.images)]
            print(f"(b) htx daemon processes on PostgreSQL, thumbnails only, {args.images} 1600x1200 JPEGs, one worker per process")
            rates = {count: daemon_throughput(cluster.new_database("daemons"), count, files, work) for count in (1, 2)}
            for count, rate in rates.items():
                print(f"    {count} process(es){rate:>10.1f} images/s")
            print(f"    two against one: {rates[2] / rates[1]:.2f}x")
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
