"""Benchmark of the read API and uploads (not a test).

    .venv/bin/python bench/api.py                # 10,000 rows, then 100,000 for stats, list, search
    .venv/bin/python bench/api.py --quick        # shorter runs, for a smoke check

Builds databases of synthetic rows (realistic EXIF, real thumbnail files) in a temporary data
folder, starts `htx api` (uvicorn, one worker) on it, and loads it from another process: wrk
(Debian package `wrk`) when installed, else an asyncio httpx client in a subprocess. Every
figure of one table comes from the same server in the same run, and the constant
`GET /api/ping` route is measured alternately with the others as the framework's floor, so
the ratios hold even on a shared, noisy machine. Then `htx daemon` joins, and 3 MB JPEGs are
POSTed one after another: the answer waits for the daemon to register each file.

Results are printed and written to bench/results/api-<time>.json.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import migrate, queries  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.tables import Image as ImageRow  # noqa: E402

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


def write_config(folder: Path, port: int) -> Path:
    config = folder / "htx.toml"
    config.write_text(
        "[paths]\ndata_dir = \"data\"\n"
        "[watch]\nsettle_ms = 200\nrescan_s = 0\n"
        "[caption]\nmodel = \"none\"\n"
        f"[api]\nport = {port}\nmax_upload_bytes = 20971520\nregister_timeout_s = 5.0\n"
        "[log]\nlevel = \"warning\"\n"
    )
    return config


def make_thumbnails(data_dir: Path) -> list[tuple[str, str]]:
    """Real JPEG thumbnails on disk; the synthetic rows point at them in turn."""
    rng = random.Random(7)
    paths = []
    for number in range(THUMBNAIL_FILES):
        sha = f"{number:064x}"
        pair = []
        for size, box in (("small", (150, 113)), ("medium", (300, 225))):
            relative = f"thumbnails/{sha[:2]}/{sha}-{size}.jpg"
            target = data_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            colour = tuple(rng.randrange(256) for _ in range(3))
            Image.new("RGB", box, colour).resize(box).save(target, "JPEG", quality=85)
            pair.append(relative)
        paths.append((pair[0], pair[1]))
    return paths


def seed(data_dir: Path, rows: int) -> list[int]:
    """A migrated database of `rows` synthetic images (the mix of a busy day); the done ids."""
    data_dir.mkdir(parents=True, exist_ok=True)
    done: list[int] = []
    thumbnails = make_thumbnails(data_dir)
    engine = make_engine(f"sqlite:///{data_dir / 'htx.db'}")
    migrate.upgrade(engine)
    rng = random.Random(1)
    now = datetime.now(UTC).replace(tzinfo=None)
    # executemany needs the same keys in every row.
    blank = {column.name: None for column in ImageRow.__table__.c if column.name != "id"}
    batch: list[dict[str, Any]] = []
    with engine.begin() as connection:
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
                    "taken_at": "2003-12-14T12:01:44", "camera_make": "Canon", "camera_model": "Canon PowerShot S40",
                    "stored_path": f"originals/ab/{row['sha256']}.jpg",
                    "thumb_small_path": small, "thumb_small_width": 150, "thumb_small_height": 113,
                    "thumb_medium_path": medium, "thumb_medium_width": 300, "thumb_medium_height": 225,
                    "metadata_ms": rng.uniform(5, 40), "thumbnails_ms": rng.uniform(20, 90),
                    "caption": f"a {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(_PLACES)}",
                    "caption_model": "Salesforce/blip-image-captioning-base",
                    "caption_device": "cpu", "caption_ms": rng.uniform(200, 900),
                }
            elif status == "failed":
                row |= {"error": "corrupt image: image file is truncated", "error_kind": "corrupt",
                        "stored_path": f"failed/IMG_{number:06d}.jpg"}
            batch.append(row)
            if len(batch) == 5000:
                connection.execute(insert(ImageRow.__table__), batch)
                batch.clear()
        if batch:
            connection.execute(insert(ImageRow.__table__), batch)
    engine.dispose()
    return done


def time_stats(data_dir: Path, runs: int = 60) -> dict[str, float]:
    """The SQL behind GET /api/stats, in this process, every time computed afresh: what a
    request costs when the database has just changed (the API reuses an answer otherwise)."""
    engine = make_engine(f"sqlite:///{data_dir / 'htx.db'}", readonly=True)
    timings = []
    with engine.connect() as connection:
        for _ in range(runs):
            started = time.perf_counter()
            queries.stats(connection, now=datetime.now(UTC).replace(tzinfo=None))
            connection.rollback()
            timings.append((time.perf_counter() - started) * 1000)
    engine.dispose()
    timings.sort()
    return {"p50_ms": statistics.median(timings), "p99_ms": timings[min(len(timings) - 1, int(len(timings) * 0.99))]}


def time_search(data_dir: Path, runs: int = 30) -> dict[str, dict[str, float]]:
    """The query behind GET /api/images?q= (first page of 50), in this process, per kind of search."""
    engine = make_engine(f"sqlite:///{data_dir / 'htx.db'}", readonly=True)
    results = {}
    with engine.connect() as connection:
        for name, arguments in SEARCHES.items():
            timings = []
            for _ in range(runs):
                started = time.perf_counter()
                page = queries.list_images(connection, limit=50, **arguments)
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
    base: str, routes: dict[str, list[str]], seconds: float, connections: int, repeats: int, folder: Path
) -> dict[str, dict[str, float]]:
    """Each route `repeats` times, each run right after one of the floor, which is also kept."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ("floor", *routes)}
    measure(base, ["/api/ping"], 1, connections, folder)  # warm up
    for _ in range(repeats):
        for name, paths in routes.items():
            measure(base, paths[:50], 1, connections, folder)
            runs["floor"].append(measure(base, ["/api/ping"], seconds, connections, folder))
            runs[name].append(measure(base, paths, seconds, connections, folder))
    return {name: median_of(found) for name, found in runs.items()}


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


def bench_database(rows: int, routes_for: Any, args: argparse.Namespace, work: Path, uploads: bool) -> dict[str, Any]:
    folder = work / f"rows-{rows}"
    folder.mkdir()
    port = free_port()
    config = write_config(folder, port)
    started = time.perf_counter()
    done_ids = seed(folder / "data", rows)
    print(f"  {rows:,} rows seeded in {time.perf_counter() - started:.1f} s", flush=True)
    result_stats = time_stats(folder / "data")
    base = f"http://127.0.0.1:{port}"
    api = Server(config, "api", folder / "api.log")
    result: dict[str, Any] = {"rows": rows, "stats_sql": result_stats, "search_sql": time_search(folder / "data")}
    try:
        wait_healthy(base)
        result["routes"] = measure_routes(base, routes_for(rows, done_ids), args.seconds, args.connections, args.repeats, folder)
        if uploads:
            daemon = Server(config, "daemon", folder / "daemon.log")
            try:
                files = unique_copies(big_jpeg(), args.uploads)
                wait_healthy(base, daemon=True)  # its first heartbeat: migrated, watching
                result["upload_3mb"] = measure_uploads(base, files)
            finally:
                daemon.stop()
    finally:
        api.stop()
    return result


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


def big_routes(rows: int, done_ids: list[int]) -> dict[str, list[str]]:
    return {"stats": ["/api/stats"], "list_50": ["/api/images?limit=50"], "search_50": SEARCH_PATHS}


def report(results: list[dict[str, Any]], generator: str) -> None:
    print(f"\nload generator: {generator}; one uvicorn worker; medians of the runs")
    print(f"{'rows':>8} {'route':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs floor':>9} {'non-2xx':>8}")
    for result in results:
        floor = result["routes"]["floor"]["rps"]
        for name, figures in result["routes"].items():
            ratio = figures["rps"] / floor
            print(
                f"{result['rows']:>8,} {name:<10} {figures['rps']:>9.0f} {figures['p50_ms']:>8.2f} "
                f"{figures['p99_ms']:>8.2f} {ratio:>8.0%} {figures['non_2xx']:>8}"
            )
        sql = result["stats_sql"]
        print(f"{result['rows']:>8,} stats SQL computed afresh (in process): p50 {sql['p50_ms']:.2f} ms, p99 {sql['p99_ms']:.2f} ms")
        print(f"{result['rows']:>8,} search SQL, first page of 50 (in process):")
        for name, figures in result["search_sql"].items():
            print(
                f"{'':>10}{name:<30} {figures['items']:>3} items  p50 {figures['p50_ms']:7.2f} ms  "
                f"p99 {figures['p99_ms']:7.2f} ms"
            )
        if "upload_3mb" in result:
            up = result["upload_3mb"]
            print(
                f"POST {up['bytes'] / 1e6:.1f} MB JPEG x{up['count']} (daemon running): p50 {up['p50_ms']:.1f} ms, "
                f"p90 {up['p90_ms']:.1f} ms, max {up['max_ms']:.1f} ms; registered {up['registered']}, queued {up['queued']}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--big-rows", type=int, default=100_000, help="second database, for stats and list (0: skip)")
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
    work = Path(tempfile.mkdtemp(prefix="htx-bench-api-"))
    try:
        results = [bench_database(args.rows, detail_routes, args, work, uploads=args.uploads > 0)]
        if args.big_rows:
            results.append(bench_database(args.big_rows, big_routes, args, work, uploads=False))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, generator)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"api-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps({"generator": generator, "cpus": os.cpu_count(), "results": results}, indent=2))
    print(f"\nwritten to {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
