"""Benchmark of the per-image path without captions (not a test).

Generates 12-megapixel JPEGs (4000x3000, quality 90) and a few PNGs once, into bench/.cache,
then, in one run:
  (a) naive:  Image.open, full load, two thumbnail() calls — what most image services do;
  (b) daemon: the daemon's whole per-image path with caption.model = "none": hash, register,
      validate, decode (draft), metadata, both thumbnails, commit, move to originals/;
  (c) throughput: `htx daemon --once` on 200 such files, with the CPU time it used;
  (d) database: the daemon's own writes of one image on each backend (SQLite, and PostgreSQL
      on a throwaway cluster of tests/postgres.py, skipped with the reason if none starts):
      register (find_by_sha, insert_pending, announce), claim, and the commit of the done
      record (work_queue.finish: update_image's UPDATE, on the claim), each in its own
      transaction on the DatabaseWriter thread, as the daemon makes them.
Prints ms per image (p50, p95) of (a) and (b) and their ratio, (c)'s images/s and cores used,
and (d)'s ms per image side by side.

    .venv/bin/python bench/pipeline.py [--images 20] [--burst 200]
    .venv/bin/python bench/pipeline.py --database-only [--db-images 500] [--db-rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.database import records, work_queue  # noqa: E402
from daemon.stages.pipeline import prepare  # noqa: E402
from daemon.service import Daemon  # noqa: E402
from daemon.database.writer import DatabaseWriter  # noqa: E402
from models import config as config_module  # noqa: E402
from models import migrate  # noqa: E402
from models.db import BACKENDS, make_engine  # noqa: E402
from models.stores import open_store  # noqa: E402
from tests.postgres import ThrowawayCluster, started_or_none  # noqa: E402

CACHE = ROOT / "bench" / ".cache" / "pipeline"
SOURCE_PHOTO = ROOT / "tests" / "corpus" / "xmp_test.jpg"  # a real 2000x1072 photograph
CAMERA_PHOTO = ROOT / "tests" / "corpus" / "flower.jpg"  # a camera's JPEG: the EXIF a real record carries


def _photo_like(seed: int, size: tuple[int, int]) -> Image.Image:
    """A real photo enlarged, with sensor-like noise: decodes like a camera JPEG, not a flat test card."""
    with Image.open(SOURCE_PHOTO) as photo:
        base = photo.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    if seed % 2:
        base = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    noise = Image.effect_noise(size, 12 + seed).convert("RGB")
    return Image.blend(base, noise, 0.08)


def build_inputs(count: int) -> tuple[list[Path], list[Path]]:
    CACHE.mkdir(parents=True, exist_ok=True)
    jpegs, pngs = [], []
    for number in range(count):
        path = CACHE / f"photo-{number:02}.jpg"
        if not path.exists():
            _photo_like(number, (4000, 3000)).save(path, "JPEG", quality=90)
        jpegs.append(path)
    for number in range(3):
        path = CACHE / f"scan-{number}.png"
        if not path.exists():
            _photo_like(100 + number, (2000, 1500)).save(path, "PNG", compress_level=6)
        pngs.append(path)
    return jpegs, pngs


def naive(path: Path) -> None:
    with Image.open(path) as image:
        image.load()
        for edge in (300, 150):
            copy = image.copy()
            copy.thumbnail((edge, edge))


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def time_naive(paths: list[Path], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        for path in paths:
            started = time.perf_counter()
            naive(path)
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def started_daemon_of_the_calling_thread(data: Path, workdir: Path) -> Daemon:
    """A daemon without captions and without worker threads, started: `process_now` does all of
    an image's work on the calling thread. (Workers would race it for the claim, and a sample
    whose image a worker took would time only its registration.)"""
    config = config_module.parse(
        {
            "paths": {"data_dir": str(data)},
            "caption": {"model": "none"},
            "watch": {"rescan_s": 0},
            "pipeline": {"roles": ["watch"]},
        },
        base_dir=workdir,
    )
    daemon = Daemon(config, observe=False)
    daemon.start()
    return daemon


def time_daemon(paths: list[Path], rounds: int, workdir: Path) -> list[float]:
    samples = []
    for round_number in range(rounds):
        data = workdir / f"daemon-{round_number}"
        daemon = started_daemon_of_the_calling_thread(data, workdir)
        config = daemon.config
        try:
            for path in paths:
                target = config.inbox_dir / path.name
                os.link(path, target)  # no copy: the daemon's move is then a rename, as in real use
                started = time.perf_counter()
                image_id = daemon.process_now(target)
                samples.append((time.perf_counter() - started) * 1000)
                assert image_id is not None
        finally:
            daemon.stop()
        shutil.rmtree(data)
    return samples


def burst(paths: list[Path], count: int, workdir: Path) -> tuple[float, float, float]:
    """`htx daemon --once` on `count` distinct 12 MP JPEGs: (seconds, images/s, cores used)."""
    data = workdir / "burst"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    for number in range(count):
        # Bytes after the JPEG end marker are ignored by decoders: same work, distinct files.
        source = paths[number % len(paths)].read_bytes()
        old = time.time() - 60
        target = inbox / f"burst-{number:03}.jpg"
        target.write_bytes(source + f"burst {number}".encode())
        os.utime(target, (old, old))
    config_file = workdir / "burst.toml"
    config_file.write_text(f'[paths]\ndata_dir = "{data}"\n[caption]\nmodel = "none"\n[log]\nlevel = "warning"\n')
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(config_file), "daemon", "--once"], check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    done = len(list((data / "originals").rglob("*.jpg")))
    assert done == count, f"only {done} of {count} processed"
    return wall, count / wall, cpu / wall


# -- (d) the database's share ------------------------------------------------------------------

WRITES = ("register", "claim", "commit")


def done_values(workdir: Path) -> dict[str, Any]:
    """The columns a done image gets (without a caption model), from a real prepare() of a
    camera JPEG: metadata, EXIF and thumbnails as daemon.roles.pipeline_worker collects them."""
    config = config_module.parse(
        {"paths": {"data_dir": str(workdir / "prepared")}, "caption": {"model": "none"}}, base_dir=workdir
    )
    source = CAMERA_PHOTO.read_bytes()
    prepared = prepare(
        CAMERA_PHOTO, sha256=hashlib.sha256(source).hexdigest(), size_bytes=len(source), config=config, store=open_store(config), caption_size=None
    )
    return records.prepared_values(prepared) | records.caption_values(None)


def finished(values: dict[str, Any], sha256: str) -> dict[str, Any]:
    """`values` plus what daemon.roles.outcomes adds when it commits the image as done."""
    return values | {
        "status": "done",
        "stage": None,
        "error": None,
        "error_kind": None,
        "processed_at": records.utcnow(),
        "stored_path": f"originals/{sha256[:2]}/{sha256}.jpg",
        "inbox_path": None,
        "processing_ms": 40.0,
        "processed_by": f"{socket.gethostname()}:{os.getpid()}",
    }


LEASE_S = 60


def write_image(writer: DatabaseWriter, worker_id: int, number: int, values: dict[str, Any]) -> dict[str, float]:
    """One new image's writes, as the registrar, a pipeline worker's claim and its outcome make them: ms each."""
    sha256 = f"{number:064x}"
    name = f"2024/trip/IMG_{number:06d}.jpg"
    started = time.perf_counter()
    known = writer.call(records.find_by_sha, sha256)  # the daemon looks the digest up first
    assert known is None
    image_id = writer.call(
        records.insert_pending,
        sha256=sha256,
        filename=name,
        inbox_path=name,
        size_bytes=3_500_000,
        hash_ms=4.0,
        source_identity=f"{number}:3500000:1700000000000000000",
    )
    assert image_id is not None
    writer.call(work_queue.announce)  # a NOTIFY on PostgreSQL, nothing on SQLite
    registered = time.perf_counter()
    claims = writer.call(work_queue.claim, worker_id, stage=work_queue.PREPARE, limit=1, lease_s=LEASE_S)
    assert [claim.image.id for claim in claims] == [image_id]
    claimed = time.perf_counter()
    recorded = writer.call(work_queue.finish, worker_id, image_id, finished(values, sha256))
    committed = time.perf_counter()
    assert recorded
    return {
        "register": (registered - started) * 1000,
        "claim": (claimed - registered) * 1000,
        "commit": (committed - claimed) * 1000,
    }


class DatabaseTarget:
    """One backend's migrated database, the daemon's writer on it and a worker's row, kept
    across rounds."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        migrate.upgrade(self.engine)
        self.writer = DatabaseWriter(self.engine)
        self.writer.start()
        self.worker_id = self.writer.call(
            work_queue.register_worker,
            host=socket.gethostname(),
            pid=os.getpid(),
            roles="bench",
            started_at=records.utcnow(),
        )
        self.samples: dict[str, list[float]] = {write: [] for write in WRITES}

    def run(self, first: int, count: int, values: dict[str, Any]) -> None:
        for number in range(first, first + count):
            for write, ms in write_image(self.writer, self.worker_id, number, values).items():
                self.samples[write].append(ms)

    def close(self) -> None:
        self.writer.stop()
        self.engine.dispose()


def database_urls(backends: list[str], workdir: Path, cluster: ThrowawayCluster | None) -> dict[str, str]:
    urls = {}
    for backend in backends:
        if backend == "sqlite":
            urls[backend] = f"sqlite:///{workdir / 'database-bench' / 'htx.db'}"
        elif cluster is not None:
            urls[backend] = cluster.new_database("bench")
    return urls


def start_cluster(backends: list[str]) -> ThrowawayCluster | None:
    """A throwaway PostgreSQL server if asked for; None (and the reason printed) if none starts."""
    return started_or_none("(d) postgresql skipped") if "postgresql" in backends else None


def time_database(backends: list[str], images: int, rounds: int, workdir: Path) -> dict[str, dict[str, list[float]]]:
    """(d): `images` new images per round on each backend, the backends taking turns round by
    round so both see the same machine noise; the databases grow by `images` a round."""
    values = done_values(workdir)
    cluster = start_cluster(backends)
    targets: dict[str, DatabaseTarget] = {}
    try:
        for backend, url in database_urls(backends, workdir, cluster).items():
            targets[backend] = DatabaseTarget(url)
        for round_number in range(rounds):
            for target in targets.values():
                target.run(round_number * images + 1, images, values)
    finally:
        for target in targets.values():
            target.close()
        if cluster is not None:
            cluster.stop()
    return {backend: target.samples for backend, target in targets.items()}


def report_database(samples: dict[str, dict[str, list[float]]], images: int, rounds: int) -> None:
    if not samples:
        return
    rows = {
        "register (find, insert_pending, announce)": ("register",),
        "claim (work_queue.claim)": ("claim",),
        "commit (work_queue.finish, status done)": ("commit",),
        "register + commit": ("register", "commit"),
        "all three writes of the image": WRITES,
    }
    print(
        f"(d) database writes per image, each its own transaction on the DatabaseWriter thread; "
        f"{images} images x {rounds} rounds per backend; ms p50 / p95"
    )
    # Neither waits for the disk at a commit, so this is the databases' own cost, not the disk's.
    print("    (SQLite: WAL, synchronous=NORMAL; PostgreSQL: throwaway cluster, fsync and synchronous_commit off)")
    print(f"    {'':<44}" + "".join(f"{backend:>18}" for backend in samples))
    for label, parts in rows.items():
        cells = []
        for by_write in samples.values():
            per_image = [sum(values) for values in zip(*(by_write[part] for part in parts))]
            p50, p95 = percentiles(per_image)
            cells.append(f"{p50:.3f} / {p95:.3f}")
        print(f"    {label:<44}" + "".join(f"{cell:>18}" for cell in cells))


def parse_backends(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    if not chosen or any(name not in BACKENDS for name in chosen):
        raise argparse.ArgumentTypeError(f"backends are a comma-separated choice of {', '.join(BACKENDS)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20, help="distinct 12 MP JPEGs (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over them for (a) and (b)")
    parser.add_argument("--burst", type=int, default=200, help="files for the --once run (0 to skip)")
    parser.add_argument("--backends", type=parse_backends, default=list(BACKENDS), help="for (d), comma-separated")
    parser.add_argument("--db-images", type=int, default=500, help="images per round of (d) (0 to skip)")
    parser.add_argument("--db-rounds", type=int, default=5, help="rounds of (d)")
    parser.add_argument("--database-only", action="store_true", help="only (d)")
    args = parser.parse_args()

    if args.database_only:
        with tempfile.TemporaryDirectory(prefix="htx-bench-") as scratch:
            samples = time_database(args.backends, args.db_images, args.db_rounds, Path(scratch))
        report_database(samples, args.db_images, args.db_rounds)
        return
    jpegs, pngs = build_inputs(args.images)
    print(f"inputs: {len(jpegs)} x 4000x3000 JPEG q90 (~{jpegs[0].stat().st_size / 1e6:.1f} MB), {len(pngs)} x 2000x1500 PNG")
    print(f"cpu cores: {os.cpu_count()}; Pillow {Image.__version__}")
    with tempfile.TemporaryDirectory(prefix="htx-bench-") as scratch:
        workdir = Path(scratch)
        # Interleave (a) and (b) so both see the same machine noise.
        naive_ms, daemon_ms, naive_png, daemon_png = [], [], [], []
        for _ in range(args.rounds):
            naive_ms += time_naive(jpegs, 1)
            daemon_ms += time_daemon(jpegs, 1, workdir)
            naive_png += time_naive(pngs, 1)
            daemon_png += time_daemon(pngs, 1, workdir)
        for label, samples in (
            ("(a) naive  12 MP JPEG", naive_ms),
            ("(b) daemon 12 MP JPEG", daemon_ms),
            ("(a) naive  3 MP PNG  ", naive_png),
            ("(b) daemon 3 MP PNG  ", daemon_png),
        ):
            p50, p95 = percentiles(samples)
            print(f"{label}: p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   (n={len(samples)})")
        ratio = statistics.median(naive_ms) / statistics.median(daemon_ms)
        print(f"JPEG speed-up, naive p50 / daemon p50: {ratio:.2f}x  (target >= 2.5x, daemon p50 <= 45 ms)")
        if args.burst:
            wall, rate, cores = burst(jpegs, args.burst, workdir)
            print(f"(c) htx daemon --once, {args.burst} x 12 MP JPEG: {wall:.1f} s, {rate:.1f} images/s, {cores:.2f} CPU cores busy on average")
        if args.db_images:
            samples = time_database(args.backends, args.db_images, args.db_rounds, workdir)
            report_database(samples, args.db_images, args.db_rounds)


if __name__ == "__main__":
    main()
