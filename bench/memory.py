"""Peak memory of one image's decode, metadata and thumbnails (issue 10; not a test).

Builds, once, into bench/.cache/memory:
  - a 9400x9400 RGBA PNG that is a small file (flat colour, a noisy patch, a transparent band):
    just under pipeline.max_pixels, 353 MB decoded;
  - a 9400x9400 JPEG of the same picture (decoded at 1/8 scale by draft mode).
Each measurement runs `daemon.stages.pipeline.prepare` in a fresh Python process and reports that
process's peak RSS (ru_maxrss) minus its RSS just before the call, next to the decoded size
(width x height x bytes per pixel). The inputs are built in a process of their own: Linux starts
a child's ru_maxrss at its parent's peak, which would hide the figure being measured. With --workers N, N threads prepare N copies at once,
sharing a DecodeBudget of --budget-mb, as the daemon's workers do.

    .venv/bin/python bench/memory.py [--size 9400] [--workers 2] [--budget-mb 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "memory"
MB = 1024 * 1024


def build_png(path: Path, edge: int) -> None:
    image = Image.new("RGBA", (edge, edge), (200, 170, 120, 255))
    patch = min(1024, edge // 2)
    noise = Image.effect_noise((patch, patch), 40)
    image.paste(Image.merge("RGBA", (noise, noise.rotate(90), noise.rotate(180), Image.new("L", noise.size, 255))), (0, 0))
    image.paste((30, 90, 200, 0), (0, edge // 2, edge, edge // 2 + edge // 16))  # a transparent band
    image.paste((30, 90, 200, 128), (edge // 2, 0, edge // 2 + patch, patch))  # half transparent
    image.save(path, "PNG", compress_level=9)


def build_inputs(edge: int) -> dict[str, Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    png = CACHE / f"rgba-{edge}.png"
    jpeg = CACHE / f"photo-{edge}.jpg"
    if not png.exists():
        build_png(png, edge)
    if not jpeg.exists():
        with Image.open(png) as image:
            image.convert("RGB").save(jpeg, "JPEG", quality=90)
    return {"png": png, "jpeg": jpeg}


def build_inputs_apart(edge: int) -> dict[str, Path]:
    subprocess.run([sys.executable, __file__, "--build", "--size", str(edge)], check=True, cwd=ROOT)
    return build_inputs(edge)


def _status_kb(field: str) -> int | None:
    """A figure of /proc/self/status (Linux), in KiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def child(path: Path, caption_size: int, workers: int, budget_mb: int) -> None:
    """In a fresh process: warm up on a tiny image, then measure `prepare` on `path`."""
    sys.path.insert(0, str(ROOT))
    from daemon.stages.decode import configure_pillow
    from daemon.stages.pipeline import prepare
    from models import config as config_module
    from models.stores import open_store

    budget = None
    if budget_mb:
        from daemon.stages.memory_budget import DecodeBudget

        budget = DecodeBudget(budget_mb * MB)
    with tempfile.TemporaryDirectory(prefix="htx-memory-") as scratch:
        workdir = Path(scratch)
        config = config_module.parse({"paths": {"data_dir": str(workdir / "data")}}, base_dir=workdir)
        configure_pillow(config.pipeline.max_pixels)

        def run(source: Path, number: int) -> None:
            prepare(
                source,
                sha256=f"{number:064x}",
                size_bytes=source.stat().st_size,
                config=config,
                store=open_store(config),
                caption_size=caption_size or None,
                **({"budget": budget} if budget else {}),
            )

        # Load every lazily imported module (PNG/JPEG plugins, ImageCms) before the baseline.
        tiny = workdir / f"tiny{path.suffix}"
        with Image.open(path) as image:
            Image.new(image.mode, (64, 64)).save(tiny)
        run(tiny, 0)
        with Image.open(path) as image:
            size, mode = image.size, image.mode
        baseline = _status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        threads = [threading.Thread(target=run, args=(path, number + 1)) for number in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # VmHWM is the same peak, of this process's own memory map only (never the parent's).
    print(json.dumps({"baseline_kb": baseline, "peak_kb": peak, "hwm_kb": _status_kb("VmHWM"), "size": size, "mode": mode}))


def measure(path: Path, caption_size: int, workers: int = 1, budget_mb: int = 0) -> dict:
    command = [sys.executable, __file__, "--child", str(path), "--caption", str(caption_size)]
    command += ["--workers", str(workers), "--budget-mb", str(budget_mb)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(label: str, result: dict, decoded_bytes: int) -> None:
    extra = (result["peak_kb"] - result["baseline_kb"]) * 1024
    print(
        f"{label:<44} baseline {result['baseline_kb'] / 1024:6.0f} MiB   peak {result['peak_kb'] / 1024:6.0f} MiB"
        f"   peak - baseline {extra / MB:6.0f} MiB = {extra / decoded_bytes:4.2f} x decoded"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=9400, help="edge of the square test images (default 9400)")
    parser.add_argument("--workers", type=int, default=2, help="threads for the concurrent run (0 to skip)")
    parser.add_argument("--budget-mb", type=int, default=1024, help="DecodeBudget of the concurrent run")
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--caption", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.caption, max(1, args.workers), args.budget_mb)
        return
    if args.build:
        build_inputs(args.size)
        return

    inputs = build_inputs_apart(args.size)
    decoded = args.size * args.size * 4
    print(
        f"{args.size}x{args.size} RGBA PNG of {inputs['png'].stat().st_size / 1024:.0f} KB: decoded {decoded / MB:.0f} MiB;"
        f" Pillow {Image.__version__}; {os.cpu_count()} cores"
    )
    report("PNG, no caption", measure(inputs["png"], 0), decoded)
    report("PNG, caption size 384", measure(inputs["png"], 384), decoded)
    print(f"{args.size}x{args.size} JPEG of {inputs['jpeg'].stat().st_size / MB:.1f} MB (decoded RGB at full scale: {decoded * 3 / 4 / MB:.0f} MiB)")
    report("JPEG, caption size 384", measure(inputs["jpeg"], 384), decoded * 3 // 4)
    if args.workers > 1:
        label = f"PNG x {args.workers} threads, budget {args.budget_mb} MiB"
        report(label, measure(inputs["png"], 384, args.workers, args.budget_mb), decoded)


if __name__ == "__main__":
    main()
