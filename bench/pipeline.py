"""Benchmark of the per-image path without captions (not a test).

Generates 12-megapixel JPEGs (4000x3000, quality 90) and a few PNGs once, into bench/.cache,
then, in one run:
  (a) naive:  Image.open, full load, two thumbnail() calls — what most image services do;
  (b) daemon: the daemon's whole per-image path with caption.model = "none": hash, register,
      validate, decode (draft), metadata, both thumbnails, commit, move to originals/;
  (c) throughput: `htx daemon --once` on 200 such files, with the CPU time it used.
Prints ms per image (p50, p95) of (a) and (b) and their ratio, and (c)'s images/s and cores used.

    .venv/bin/python bench/pipeline.py [--images 20] [--burst 200]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.service import Daemon  # noqa: E402
from models import config as config_module  # noqa: E402

CACHE = ROOT / "bench" / ".cache" / "pipeline"
SOURCE_PHOTO = ROOT / "tests" / "corpus" / "xmp_test.jpg"  # a real 2000x1072 photograph


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


def time_daemon(paths: list[Path], rounds: int, workdir: Path) -> list[float]:
    samples = []
    for round_number in range(rounds):
        data = workdir / f"daemon-{round_number}"
        config = config_module.parse(
            {"paths": {"data_dir": str(data)}, "caption": {"model": "none"}, "watch": {"rescan_s": 0}},
            base_dir=workdir,
        )
        daemon = Daemon(config, observe=False)
        daemon.start()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20, help="distinct 12 MP JPEGs (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over them for (a) and (b)")
    parser.add_argument("--burst", type=int, default=200, help="files for the --once run (0 to skip)")
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
