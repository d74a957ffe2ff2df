"""Benchmark of the read API and uploads (not a test).

    .venv/bin/python bench/api.py                # 10,000 rows, then 100,000 for detail, stats, list, search
    .venv/bin/python bench/api.py --quick        # shorter runs, for a smoke check
    .venv/bin/python bench/api.py --backends sqlite
    .venv/bin/python bench/api.py --rows 100000 --big-rows 0 --uploads 0 --quick   # lists at 100,000

Builds databases of synthetic rows (realistic EXIF, real thumbnail files) in a temporary data
folder, once per database backend (SQLite, and PostgreSQL on a throwaway cluster of
tests/postgres.py, skipped with the reason when no server can start here), starts one
`htx api` (uvicorn, one worker) on each, and loads them from another process: wrk (Debian
package `wrk`) when installed, else an asyncio httpx client in a subprocess. Every figure of
one table comes from the same servers in the same run: the backends take turns route by
route, and the constant `GET /api/ping` route is measured right before each run as the
framework's floor, so the ratios hold even on a shared, noisy machine. Then `htx daemon`
joins each, and 3 MB JPEGs are POSTed one after another: the answer waits for the daemon to
register each file.

Results are printed side by side and written to bench/results/api-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from sqlalchemy import Connection, Engine, insert, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.images import encode_cursor  # noqa: E402
from models import image_reads, migrate, stats_reads  # noqa: E402
from models.db import BACKENDS, make_engine  # noqa: E402
from models.store import thumbnail_key  # noqa: E402
from models.tables import Image as ImageRow  # noqa: E402
from tests.postgres import ThrowawayCluster, started_or_none  # noqa: E402

# What a camera writes (flower.jpg of the corpus, as the daemon stores it): about 1 KB of JSON.
EXIF = json.loads(
    '{"ResolutionUnit": 2, "Make": "Canon", "Model": "Canon PowerShot S40", "Orientation": 1, '
    '"DateTime": "2003:12:14 12:01:44", "YCbCrPositioning": 1, "XResolution": 180.0, "YResolution": 180.0, '
    '"Exif": {"ExifVersion": "0220", "CompressedBitsPerPixel": 5.0, "DateTimeOriginal": "2003:12:14 12:01:44", '
    '"DateTimeDigitized": "2003:12:14 12:01:44", "ShutterSpeedValue": 8.96875, "ApertureValue": 4.65625, '
    '"ExposureBiasValue": 0.0, "MaxApertureValue": 2.970855712890625, "MeteringMode": 2, "Flash": 24, '
    '"FocalLength": 21.3125, "ColorSpace": 1, "ExifImageWidth": 2272, "FocalPlaneXResolution": 8114.285714285715, '
    '"ExifImageHeight": 1704, "FocalPlaneYResolution": 8114.285714285715, "FocalPlaneResolutionUnit": 2, '
    '"SensingMethod": 2, "ExposureTime": 0.002, "ExifInteroperabilityOffset": 1416, "FNumber": 4.9, '
    '"CustomRendered": 0, "ExposureMode": 0, "FlashPixVersion": "0100", "WhiteBalance": 0, '
    '"DigitalZoomRatio": 1.0, "SceneCaptureType": 0}, '
    '"Interop": {"InteropIndex": "R98", "Tag2": "0100", "RelatedImageLength": 1704, "RelatedImageWidth": 2272}}'
)
THUMBNAIL_FILES = 64
SEED_BATCH_ROWS = 2000
# Captions of the synthetic rows, varied as real ones are: each noun is in about 1 in 12.
_ADJECTIVES = ("red", "small", "old", "white", "black", "young", "large", "blue")
_NOUNS = ("dog", "cat", "car", "boat", "house", "tree", "bird", "man", "woman", "child", "flower", "bicycle")
_PLACES = ("on a beach", "in a garden", "on a street", "in a field", "near a lake", "in a kitchen")
# GET /api/images?q=..., computed afresh in process (time_search) and served under load.
SEARCHES = {
    "word (1 in 12 rows)": {"search": "dog"},
    "two words": {"search": "dog beach"},
    "prefix of a name": {"search": "img_05"},
    "one letter (every row)": {"search": "a"},
    "folder (every row)": {"search": "trip"},
    "word + status=failed (none)": {"search": "dog", "status": "failed"},
    "folder + status=failed": {"search": "trip", "status": "failed"},
    "word, page 100 (cursor)": {"search": "dog", "before_id": 5000},
    "no match": {"search": "zebra"},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(folder: Path, port: int, url: str = "") -> Path:
    """The config of one backend's API and daemon; `url` empty: SQLite at data/htx.db."""
    database = f"[database]\nurl = {json.dumps(url)}\n" if url else ""
    config = folder / "htx.toml"
    config.write_text(
        "[paths]\ndata_dir = \"data\"\n"
        f"{database}"
        "[watch]\nsettle_ms = 200\nrescan_s = 0\n"
        "[caption]\nmodel = \"none\"\n"
        f"[api]\nport = {port}\nmax_upload_bytes = 20971520\nregister_timeout_s = 5.0\n"
        "[log]\nlevel = \"warning\"\n"
    )
    return config


def database_url(backend: str, data_dir: Path, cluster: ThrowawayCluster | None) -> str:
    """Where `backend`'s database of one run lives: the file the config's default names, or a
    fresh database of the cluster."""
    if backend == "postgresql":
        assert cluster is not None
        return cluster.new_database("bench")
    return f"sqlite:///{data_dir / 'htx.db'}"


def start_cluster(backends: list[str]) -> ThrowawayCluster | None:
    """A throwaway PostgreSQL server if asked for; None (and the reason printed) if none starts."""
    return started_or_none("postgresql skipped") if "postgresql" in backends else None


def make_thumbnails(data_dir: Path) -> list[tuple[str, str]]:
    """Real JPEG thumbnails on disk; the synthetic rows point at them in turn."""
    rng = random.Random(7)
    paths = []
    for number in range(THUMBNAIL_FILES):
        sha = f"{number:064x}"
        pair = []
        for size, box in (("small", (150, 113)), ("medium", (300, 225))):
            relative = thumbnail_key(sha, size, "jpg")
            target = data_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            colour = tuple(rng.randrange(256) for _ in range(3))
            Image.new("RGB", box, colour).resize(box).save(target, "JPEG", quality=85)
            pair.append(relative)
        paths.append((pair[0], pair[1]))
    return paths


def seed(data_dir: Path, rows: int, url: str) -> list[int]:
    """A migrated database of `rows` synthetic images (the mix of a busy day); the done ids.

    The rows go in by executemany, SEED_BATCH_ROWS per call and transaction (insert_batch).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    done: list[int] = []
    thumbnails = make_thumbnails(data_dir)
    engine = make_engine(url)
    migrate.upgrade(engine)
    rng = random.Random(1)
    taken_rng = random.Random(11)  # capture times (order=taken), apart from the other columns
    now = datetime.now(UTC).replace(tzinfo=None)
    # executemany needs the same keys in every row; columns that may not be NULL and are not
    # set below keep their defaults.
    blank = {column.name: None for column in ImageRow.__table__.c if column.nullable and column.name != "id"}
    batch: list[dict[str, Any]] = []
    with engine.connect() as connection:
        for number in range(rows):
            status = rng.choices(("done", "failed", "pending", "processing"), (92, 6, 1.5, 0.5))[0]
            received = now - timedelta(seconds=(rows - number) * 2)
            row: dict[str, Any] = blank | {
                "sha256": f"{number + 10**6:064x}",
                "filename": f"2024/trip/IMG_{number:06d}.jpg",
                "status": status,
                "received_at": received,
                "size_bytes": rng.randint(200_000, 6_000_000),
                "hash_ms": rng.uniform(1, 15),
                "inbox_path": None,
            }
            if status in ("done", "failed"):
                row |= {"processed_at": received + timedelta(seconds=1), "processing_ms": rng.lognormvariate(4.5, 0.5)}
            if status == "done":
                done.append(number + 1)
                small, medium = thumbnails[number % len(thumbnails)]
                row |= {
                    "format": "JPEG", "width": 4000, "height": 3000, "mode": "RGB", "exif": EXIF,
                    "taken_at": taken_at(taken_rng, received),
                    "camera_make": "Canon", "camera_model": "Canon PowerShot S40",
                    "stored_path": f"originals/ab/{row['sha256']}.jpg",
                    "thumb_small_path": small, "thumb_small_width": 150, "thumb_small_height": 113,
                    "thumb_medium_path": medium, "thumb_medium_width": 300, "thumb_medium_height": 225,
                    "metadata_ms": rng.uniform(5, 40), "thumbnails_ms": rng.uniform(20, 90),
                    "caption": f"a {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(_PLACES)}",
                    "caption_model": "Salesforce/blip-image-captioning-base",
                    "caption_device": "cpu", "caption_runtime": "torch bfloat16", "caption_ms": rng.uniform(200, 900),
                }
            elif status == "failed":
                row |= {"error": "corrupt image: image file is truncated", "error_kind": "corrupt",
                        "stored_path": f"failed/IMG_{number:06d}.jpg"}
            batch.append(row)
            if len(batch) == SEED_BATCH_ROWS:
                insert_batch(connection, batch)
        if batch:
            insert_batch(connection, batch)
    settle(engine)
    engine.dispose()
    return done


def taken_at(rng: random.Random, received: datetime) -> str | None:
    """A camera's capture time: from a day to ten years before the upload, or none (a scan,
    a screenshot) for one photo in seven. sort_taken follows from it (models.tables)."""
    if rng.random() < 1 / 7:
        return None
    return (received - timedelta(seconds=rng.randrange(86_400, 10 * 365 * 86_400))).isoformat(timespec="seconds")


def insert_batch(connection: Connection, batch: list[dict[str, Any]]) -> None:
    """One executemany, committed on its own. PostgreSQL's trigger updates the same
    image_totals row once per image, and within one transaction each update seems to step over
    every version the transaction made of it before (none can be pruned yet): 100,000 rows in
    one transaction took 410 s to seed, in transactions of 2,000 rows 25 s."""
    connection.execute(insert(ImageRow.__table__), batch)
    connection.commit()
    batch.clear()


def settle(engine: Engine) -> None:
    """PostgreSQL: the tables as a live database's are a while after a bulk load, so that
    autovacuum does not change them halfway through the measurements.

    ANALYZE gives the planner its statistics. VACUUM sets the visibility map, without which an
    index-only scan (the percentiles of /api/stats walk 46,000 index entries at 100,000 rows)
    reads the table too; a page some process has pinned at that moment is left out, so it
    runs until every page is all-visible. The bulk load's 100,000 trigger updates of the four
    image_totals rows leave that table at about 1,400 pages of dead versions, which every stats
    request would scan; the daemon's one transaction per image lets PostgreSQL prune them as it
    goes, so VACUUM FULL gives the table the size it has in use.
    """
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM FULL image_totals")
        for _ in range(SETTLE_PASSES):
            connection.exec_driver_sql("VACUUM (ANALYZE)")
            pages, visible = connection.execute(_VISIBILITY).one()
            if visible >= pages:
                return
    print(f"  postgresql: {visible} of {pages} pages of images all-visible after {SETTLE_PASSES} VACUUMs", flush=True)


SETTLE_PASSES = 5
_VISIBILITY = text("SELECT relpages, relallvisible FROM pg_class WHERE relname = 'images'")


def time_stats(url: str, runs: int = 60) -> dict[str, float]:
    """The SQL behind GET /api/stats, in this process, every time computed afresh: what a
    request costs when the database has just changed (the API reuses an answer otherwise on
    SQLite; on PostgreSQL every request computes it)."""
    engine = make_engine(url, readonly=True)
    timings = []
    with engine.connect() as connection:
        for _ in range(runs):
            started = time.perf_counter()
            stats_reads.stats(connection, now=datetime.now(UTC).replace(tzinfo=None))
            connection.rollback()
            timings.append((time.perf_counter() - started) * 1000)
    engine.dispose()
    timings.sort()
    return {"p50_ms": statistics.median(timings), "p99_ms": timings[min(len(timings) - 1, int(len(timings) * 0.99))]}


def time_search(url: str, runs: int = 30) -> dict[str, dict[str, float]]:
    """The query behind GET /api/images?q= (first page of 50), in this process, per kind of search."""
    engine = make_engine(url, readonly=True)
    results = {}
    with engine.connect() as connection:
        for name, arguments in SEARCHES.items():
            timings = []
            for _ in range(runs):
                started = time.perf_counter()
                page = image_reads.list_images(connection, limit=50, **arguments)
                connection.rollback()
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            results[name] = {
                "items": len(page.items),
                "p50_ms": statistics.median(timings),
                "p99_ms": timings[min(len(timings) - 1, int(len(timings) * 0.99))],
            }
    engine.dispose()
    return results


# GET /api/images pages, by arrival and by when taken (order=taken), computed afresh in
# process (time_lists) and served under load: the first page, and one halfway down the table
# (its cursor from deep_cursors), of all images and of the gallery's default view.
GALLERY_VIEW = ("pending", "processing", "done")
LISTS = {
    "received, first page": {},
    "received, deep page": {"deep": "received"},
    "taken, first page": {"order": "taken"},
    "taken, deep page": {"order": "taken", "deep": "taken"},
    "received, 3 statuses": {"status": GALLERY_VIEW},
    "taken, 3 statuses": {"order": "taken", "status": GALLERY_VIEW},
    "taken, 3 statuses, deep": {"order": "taken", "status": GALLERY_VIEW, "deep": "taken"},
    "taken, status=failed": {"order": "taken", "status": "failed"},
}


def deep_cursors(url: str, rows: int) -> dict[str, dict[str, Any]]:
    """Where a page halfway down the table starts, in each order: the keyset of the row there
    (list_images' arguments). The same on every backend: the rows are."""
    engine = make_engine(url, readonly=True)
    with engine.connect() as connection:
        middle = connection.execute(
            text("SELECT sort_taken, id FROM images ORDER BY sort_taken DESC, id DESC LIMIT 1 OFFSET :n"), {"n": rows // 2}
        ).one()
    engine.dispose()
    return {"received": {"before_id": rows // 2}, "taken": {"before_id": middle.id, "before_key": middle.sort_taken}}


def _list_arguments(spec: dict[str, Any], deep: dict[str, dict[str, Any]]) -> dict[str, Any]:
    arguments = {key: value for key, value in spec.items() if key != "deep"}
    return arguments | (deep[spec["deep"]] if "deep" in spec else {})


def list_path(spec: dict[str, Any], deep: dict[str, dict[str, Any]]) -> str:
    """The request of a LISTS entry, its cursor as the API makes it."""
    arguments = _list_arguments(spec, deep)
    query = {"limit": "50"}
    if "order" in arguments:
        query["order"] = arguments["order"]
    if "status" in arguments:
        status = arguments["status"]
        query["status"] = status if isinstance(status, str) else ",".join(status)
    if "before_id" in arguments:
        query["cursor"] = encode_cursor(arguments["before_id"], arguments.get("before_key"))
    return "/api/images?" + "&".join(f"{key}={value}" for key, value in query.items())


def time_lists(url: str, deep: dict[str, dict[str, Any]], runs: int = 30) -> dict[str, dict[str, float]]:
    """The query behind each LISTS page of 50, in this process."""
    engine = make_engine(url, readonly=True)
    results = {}
    with engine.connect() as connection:
        for name, spec in LISTS.items():
            arguments = _list_arguments(spec, deep)
            timings = []
            for _ in range(runs):
                started = time.perf_counter()
                page = image_reads.list_images(connection, limit=50, **arguments)
                connection.rollback()
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            results[name] = {
                "items": len(page.items),
                "p50_ms": statistics.median(timings),
                "p99_ms": timings[min(len(timings) - 1, int(len(timings) * 0.99))],
            }
    engine.dispose()
    return results


class Server:
    """`htx <command>` on a config file, as a subprocess."""

    def __init__(self, config: Path, command: str, log: Path) -> None:
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--config", str(config), command],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def wait_healthy(base: str, *, daemon: bool = False, timeout: float = 60) -> None:
    """Until /healthz answers 200 (and, with `daemon`, reports the daemon's heartbeat)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{base}/healthz", timeout=2)
            if response.status_code == 200 and (not daemon or response.json()["daemon"] == "running"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the API at {base} did not become healthy")


# -- load generation ----------------------------------------------------------------------------

_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk_script(folder: Path, paths: list[str]) -> Path:
    script = folder / f"paths-{abs(hash(tuple(paths)))}.lua"
    listed = ",".join(json.dumps(path) for path in paths)
    script.write_text(
        f"local paths = {{{listed}}}\n"
        "math.randomseed(os.time())\n"
        "request = function() return wrk.format('GET', paths[math.random(#paths)]) end\n"
    )
    return script


def run_wrk(base: str, paths: list[str], seconds: float, connections: int, folder: Path) -> dict[str, float]:
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(_wrk_script(folder, paths)), base],
        capture_output=True, text=True, check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}
    for label in ("50", "99"):
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)$", output, re.M).groups()
        result[f"p{label}_ms"] = float(value) * _WRK_UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(errors.group(1)) if errors else 0
    return result


async def _httpx_load(base: str, paths: list[str], seconds: float, connections: int) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal failures
            rng = random.Random()
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.get(rng.choice(paths))
                latencies.append((time.perf_counter() - started) * 1000)
                failures += response.status_code >= 400

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "non_2xx": failures,
    }


def run_httpx(base: str, paths: list[str], seconds: float, connections: int, folder: Path) -> dict[str, float]:
    """The asyncio client, in a process of its own so it never shares the server's CPU time slice."""
    spec = json.dumps({"base": base, "paths": paths, "seconds": seconds, "connections": connections})
    output = subprocess.run(
        [sys.executable, __file__, "--loadgen", spec], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output)


def measure(base: str, paths: list[str], seconds: float, connections: int, folder: Path) -> dict[str, float]:
    if shutil.which("wrk"):
        return run_wrk(base, paths, seconds, connections, folder)
    return run_httpx(base, paths, seconds, connections, folder)


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]} | {"runs": [r["rps"] for r in runs]}


def measure_routes(
    bases: dict[str, str], routes: dict[str, list[str]], seconds: float, connections: int, repeats: int, folder: Path
) -> dict[str, dict[str, dict[str, float]]]:
    """Each route on each server (backend -> base URL) `repeats` times, each run right after
    one of the floor on the same server, which is also kept. The backends take turns route by
    route, so a noisy minute of the machine falls on both, not on one."""
    runs = {backend: {name: [] for name in ("floor", *routes)} for backend in bases}
    for base in bases.values():
        measure(base, ["/api/ping"], 1, connections, folder)  # warm up
    for _ in range(repeats):
        for name, paths in routes.items():
            for backend, base in bases.items():
                measure(base, paths[:50], 1, connections, folder)
                runs[backend]["floor"].append(measure(base, ["/api/ping"], seconds, connections, folder))
                runs[backend][name].append(measure(base, paths, seconds, connections, folder))
    return {backend: {name: median_of(found) for name, found in named.items()} for backend, named in runs.items()}


# -- uploads ------------------------------------------------------------------------------------


def big_jpeg(megabytes: float = 3.0) -> bytes:
    """A photo-sized JPEG of about `megabytes` (noise does not compress)."""
    rng = random.Random(3)
    width, height = 1900, 1400
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    for quality in (95, 90, 85, 80, 70):
        buffer = io.BytesIO()
        noise.save(buffer, "JPEG", quality=quality)
        if buffer.tell() <= megabytes * 1_100_000:
            return buffer.getvalue()
    return buffer.getvalue()


def unique_copies(jpeg: bytes, count: int) -> list[bytes]:
    """Distinct files (a different comment segment each), so no upload is a duplicate."""
    copies = []
    for number in range(count):
        comment = f"htx bench {number} {time.time_ns()}".encode()
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        copies.append(jpeg[:2] + segment + jpeg[2:])
    return copies


def measure_uploads(base: str, files: list[bytes]) -> dict[str, Any]:
    latencies, statuses = [], []
    with httpx.Client(base_url=base, timeout=60) as client:
        for number, body in enumerate(files):
            started = time.perf_counter()
            response = client.post("/api/images", files={"file": (f"bench-{number}.jpg", body, "image/jpeg")})
            latencies.append((time.perf_counter() - started) * 1000)
            statuses.append(response.json().get("status") if response.status_code == 202 else response.status_code)
    ordered = sorted(latencies)
    return {
        "count": len(files),
        "bytes": len(files[0]),
        "p50_ms": statistics.median(latencies),
        "p90_ms": ordered[int(len(ordered) * 0.9)],
        "max_ms": ordered[-1],
        "registered": sum(1 for status in statuses if status in ("pending", "processing", "done", "failed")),
        "queued": statuses.count("queued"),
    }


# -- main ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One backend's side of a run: its data folder, database, config and API address."""

    backend: str
    folder: Path
    url: str
    config: Path
    base: str


def make_target(rows: int, backend: str, work: Path, cluster: ThrowawayCluster | None) -> Target:
    folder = work / f"rows-{rows}-{backend}"
    folder.mkdir()
    port = free_port()
    url = database_url(backend, folder / "data", cluster)
    # SQLite is the config's default (data/htx.db): written out only for PostgreSQL.
    config = write_config(folder, port, url if backend == "postgresql" else "")
    return Target(backend, folder, url, config, f"http://127.0.0.1:{port}")


def bench_database(
    rows: int, routes_for: Any, args: argparse.Namespace, work: Path, uploads: bool, cluster: ThrowawayCluster | None
) -> list[dict[str, Any]]:
    """The same `rows` on each backend, then every API server up at once, loaded in turns."""
    targets = [make_target(rows, backend, work, cluster) for backend in args.backends]
    results: dict[str, dict[str, Any]] = {}
    done_ids: list[int] = []
    for target in targets:
        started = time.perf_counter()
        done_ids = seed(target.folder / "data", rows, target.url)  # the same rows on every backend
        print(f"  {rows:,} rows seeded on {target.backend} in {time.perf_counter() - started:.1f} s", flush=True)
    deep = deep_cursors(targets[0].url, rows)
    for target in targets:
        results[target.backend] = {
            "backend": target.backend,
            "rows": rows,
            "stats_sql": time_stats(target.url),
            "search_sql": time_search(target.url),
            "list_sql": time_lists(target.url, deep),
        }
    apis = [Server(target.config, "api", target.folder / "api.log") for target in targets]
    try:
        for target in targets:
            wait_healthy(target.base)
        routes = routes_for(rows, done_ids) | list_routes(deep)
        bases = {target.backend: target.base for target in targets}
        measured = measure_routes(bases, routes, args.seconds, args.connections, args.repeats, work)
        for backend, figures in measured.items():
            results[backend]["routes"] = figures
        if uploads:
            for target in targets:
                try:
                    results[target.backend]["upload_3mb"] = bench_uploads(target, args.uploads)
                except UploadsFailed as error:  # the figures measured so far are still worth having
                    print(f"  uploads on {target.backend} not measured: {error}", flush=True)
                    results[target.backend]["upload_3mb_error"] = str(error)
    finally:
        for api in apis:
            api.stop()
    return list(results.values())


class UploadsFailed(Exception):
    """The daemon did not come up; the message ends with its log."""


def bench_uploads(target: Target, count: int) -> dict[str, Any]:
    """3 MB POSTs to the target's API, its own daemon registering each."""
    log = target.folder / "daemon.log"
    daemon = Server(target.config, "daemon", log)
    try:
        files = unique_copies(big_jpeg(), count)
        try:
            wait_healthy(target.base, daemon=True)  # its first heartbeat: migrated, watching
        except SystemExit as error:
            raise UploadsFailed(f"{error}; its daemon's log ends:\n{log.read_text()[-3000:]}") from None
        return measure_uploads(target.base, files)
    finally:
        daemon.stop()


def detail_routes(rows: int, done_ids: list[int]) -> dict[str, list[str]]:
    rng = random.Random(5)
    ids = [rng.randint(1, rows) for _ in range(2000)]
    done_sample = rng.sample(done_ids, min(2000, len(done_ids)))
    return {
        "detail": [f"/api/images/{image_id}" for image_id in ids],
        "list_50": ["/api/images?limit=50"],
        "stats": ["/api/stats"],
        "thumbnail": [f"/api/images/{image_id}/thumbnails/small" for image_id in done_sample],
        "search_50": SEARCH_PATHS,
    }


# One word of a caption, a caption and a place, a name prefix: a page of 50 each.
SEARCH_PATHS = [f"/api/images?limit=50&q={q}" for q in ("dog", "cat+garden", "img_05", "red", "bicycle+lake")]


def list_routes(deep: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """The list's first and deep pages in both orders, and the gallery's default view."""
    return {
        "list_deep": [list_path(LISTS["received, deep page"], deep)],
        "taken_50": [list_path(LISTS["taken, first page"], deep)],
        "taken_deep": [list_path(LISTS["taken, deep page"], deep)],
        "view_50": [list_path(LISTS["received, 3 statuses"], deep)],
        "view_taken": [list_path(LISTS["taken, 3 statuses"], deep)],
    }


def big_routes(rows: int, done_ids: list[int]) -> dict[str, list[str]]:
    rng = random.Random(5)
    return {
        "detail": [f"/api/images/{rng.randint(1, rows)}" for _ in range(2000)],  # spread over the whole table
        "stats": ["/api/stats"],
        "list_50": ["/api/images?limit=50"],
        "search_50": SEARCH_PATHS,
    }


STATS_P99_TARGET_MS = 20.0


def _by_size(results: list[dict[str, Any]]) -> dict[int, dict[str, dict[str, Any]]]:
    """rows -> backend -> result, in the order of the run."""
    grouped: dict[int, dict[str, dict[str, Any]]] = {}
    for result in results:
        grouped.setdefault(result["rows"], {})[result["backend"]] = result
    return grouped


def _route_cell(figures: dict[str, float], floor: dict[str, float]) -> str:
    return (
        f"{figures['rps']:>9.0f} {figures['p50_ms']:>7.2f} {figures['p99_ms']:>7.2f} "
        f"{figures['rps'] / floor['rps']:>8.0%} {figures['non_2xx']:>6.0f}"
    )


def report(results: list[dict[str, Any]], generator: str, args: argparse.Namespace) -> None:
    """Side by side: one column group per backend, one line per database size and route."""
    grouped = _by_size(results)
    backends = list(next(iter(grouped.values())))
    head = f"{'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'vs floor':>8} {'non2xx':>6}"
    gap = "   "
    print(
        f"\nload generator: {generator}; one uvicorn worker per backend; {args.connections} connections; "
        f"medians of {args.repeats} run(s) of {args.seconds:g} s; 'floor' is GET /api/ping"
    )
    print(f"{'':>8} {'':<10}" + "".join(f"{gap}{backend:^{len(head)}}" for backend in backends))
    print(f"{'rows':>8} {'route':<10}" + f"{gap}{head}" * len(backends))
    for rows, by_backend in grouped.items():
        for name in by_backend[backends[0]]["routes"]:
            cells = [_route_cell(by_backend[b]["routes"][name], by_backend[b]["routes"]["floor"]) for b in backends]
            print(f"{rows:>8,} {name:<10}" + "".join(f"{gap}{cell}" for cell in cells))

    sql_width = 20
    print("\nSQL computed afresh in process (stats: 60 runs; search, list: a page of 50, 30 runs), p50 / p99 ms")
    print(f"{'rows':>8} {'query (items found)':<46}" + "".join(f"{backend:>{sql_width}}" for backend in backends))
    for rows, by_backend in grouped.items():
        cells = [f"{by_backend[b]['stats_sql']['p50_ms']:.2f} / {by_backend[b]['stats_sql']['p99_ms']:.2f}" for b in backends]
        print(f"{rows:>8,} {'stats':<46}" + "".join(f"{cell:>{sql_width}}" for cell in cells))
        for kind, label in (("search_sql", "search"), ("list_sql", "list")):
            for name in by_backend[backends[0]].get(kind, {}):
                found = [by_backend[b][kind][name] for b in backends]
                items = "/".join(str(figures["items"]) for figures in found)  # one per backend: they should agree
                cells = [f"{figures['p50_ms']:.2f} / {figures['p99_ms']:.2f}" for figures in found]
                print(f"{rows:>8,} {f'{label}: {name} ({items})':<46}" + "".join(f"{cell:>{sql_width}}" for cell in cells))

    uploads = [
        (rows, backend, result["upload_3mb"])
        for rows, by_backend in grouped.items()
        for backend, result in by_backend.items()
        if "upload_3mb" in result
    ]
    if uploads:
        print()
    for rows, backend, up in uploads:
        print(
            f"{backend:<10} POST {up['bytes'] / 1e6:.1f} MB JPEG x{up['count']} ({rows:,} rows, daemon running): "
            f"p50 {up['p50_ms']:.1f} ms, p90 {up['p90_ms']:.1f} ms, max {up['max_ms']:.1f} ms; "
            f"registered {up['registered']}, queued {up['queued']}"
        )

    rows = max(grouped)
    verdicts = []
    for backend, result in grouped[rows].items():
        served = result["routes"]["stats"]["p99_ms"]
        verdict = "ok" if served <= STATS_P99_TARGET_MS else "OVER"
        verdicts.append(f"{backend} {served:.2f} ms {verdict} (SQL alone {result['stats_sql']['p99_ms']:.2f} ms)")
    print(f"\nGET /api/stats p99 at {rows:,} rows, target <= {STATS_P99_TARGET_MS:g} ms: " + "; ".join(verdicts))


def parse_backends(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BACKENDS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"backends are a comma-separated choice of {', '.join(BACKENDS)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--big-rows", type=int, default=100_000, help="second database, for detail, stats, list and search (0: skip)")
    parser.add_argument("--backends", type=parse_backends, default=list(BACKENDS), help="comma-separated (default: sqlite,postgresql)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each route (medians are reported)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--uploads", type=int, default=30, help="3 MB uploads to time")
    parser.add_argument("--quick", action="store_true", help="2 s runs, once each, 10 uploads")
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        spec = json.loads(args.loadgen)
        print(json.dumps(asyncio.run(_httpx_load(spec["base"], spec["paths"], spec["seconds"], spec["connections"]))))
        return
    if args.quick:
        args.seconds, args.repeats, args.uploads = 2.0, 1, 10
    generator = "wrk" if shutil.which("wrk") else "httpx (asyncio, separate process)"
    print(f"HTX API benchmark on {os.cpu_count()} CPU(s), load from {generator}", flush=True)
    cluster = start_cluster(args.backends)
    if cluster is None and "postgresql" in args.backends:
        args.backends = [backend for backend in args.backends if backend != "postgresql"]
        if not args.backends:
            raise SystemExit("no backend left to measure")
    if cluster is not None:
        print(f"postgresql: throwaway cluster in {cluster.folder} (fsync off)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="htx-bench-api-"))
    try:
        results = bench_database(args.rows, detail_routes, args, work, args.uploads > 0, cluster)
        if args.big_rows:
            results += bench_database(args.big_rows, big_routes, args, work, False, cluster)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if cluster is not None:
            cluster.stop()
    report(results, generator, args)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"api-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    document = {"generator": generator, "cpus": os.cpu_count(), "backends": args.backends, "results": results}
    target.write_text(json.dumps(document, indent=2))
    print(f"\nwritten to {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
