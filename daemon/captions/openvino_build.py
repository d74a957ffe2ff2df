"""Building the compiled caption model: in a child process, one piece at a time.

Converting BLIP-base needs its float32 torch model (1 GB) and, while a piece is traced and
converted, a few copies of that piece's graph. Done in the daemon, its memory stayed with the
daemon for good (glibc keeps what it freed, and the peak, 6.5-7 GB, killed 4 and 8 GB
servers). In a child the peak is the child's and goes back to the system when it exits; each
piece is converted, saved and freed before the next, so the peak is about the torch model
plus one piece's conversion. Should the child be killed anyway (the OOM killer takes the
largest process: the child, not the daemon), or the machine have too little free memory to
start, the daemon says so in one line and captions with torch.

The child reports what it does as lines on stdout (`PROGRESS` then the words), which the
daemon shows as its caption status ("preparing: ...").

    python -m daemon.captions.openvino_build '<json spec>'    (run by `build`, not by hand)
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from daemon.captions.openvino_cache import (
    FILES,
    MANIFEST,
    Precision,
    Shapes,
    cache_problem,
    file_record,
    import_openvino,
)

PROGRESS = "htx-progress: "
# Free memory a build needs, per byte of checkpoint weights (float32): the torch model, plus
# the piece being converted and its graphs (measured with BLIP-base, 0.99 GB of weights: the
# child's peak, VmHWM, 1.95 GB; bench/caption.py), with a margin.
MEMORY_PER_WEIGHT_BYTE = 2.2
# Seconds a build takes per GB of checkpoint weights on a 2-core AVX-512 server (BLIP-base:
# 22 s; bench/caption.py), for the "about N s" a first start shows.
SECONDS_PER_GB = 25


class BuildFailed(Exception):
    """The child could not build the compiled model; the message is one line saying why."""


def weights_bytes(model_folder: Path) -> int:
    return sum(path.stat().st_size for path in model_folder.glob("*.safetensors")) or sum(
        path.stat().st_size for path in model_folder.glob("pytorch_model*")
    )


def expected_seconds(model_folder: Path) -> int:
    """About how long building takes here, for the status a first start shows."""
    return max(5, round(weights_bytes(model_folder) / 1e9 * SECONDS_PER_GB / 5) * 5)


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo, in bytes (the kernel's estimate of what can be had
    without swapping); None where there is no such file."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def build(
    model_folder: Path,
    folder: Path,
    expected: dict[str, Any],
    precision: Precision,
    shapes: Shapes,
    progress: Callable[[str], None],
) -> None:
    """Build the cache `folder` for the checkpoint in `model_folder`, in a child process.

    Raises BuildFailed, with the reason in one line, when it cannot: too little free memory,
    the child killed (out of memory) or failing."""
    needed = weights_bytes(model_folder) * MEMORY_PER_WEIGHT_BYTE
    available = available_memory()
    if available is not None and available < needed:
        raise BuildFailed(
            f"compiling it needs about {needed / 1e9:.1f} GB of free memory and this machine has "
            f"{available / 1e9:.1f} GB available"
        )
    spec = {
        "model_folder": str(model_folder),
        "folder": str(folder),
        "expected": expected,
        "precision": asdict(precision),
        "shapes": asdict(shapes),
    }
    project = str(Path(__file__).resolve().parents[2])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")]))}
    last_lines: deque[str] = deque(maxlen=5)
    with subprocess.Popen(
        [sys.executable, "-m", "daemon.captions.openvino_build", json.dumps(spec)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    ) as child:
        assert child.stdout is not None
        try:
            for line in child.stdout:
                if line.startswith(PROGRESS):
                    progress(line[len(PROGRESS) :].strip())
                elif line.strip():
                    last_lines.append(line.strip())
        except BaseException:
            child.kill()
            raise
    returncode = child.returncode
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        raise BuildFailed(f"the compiling process was killed by {name}{hint}")
    if returncode != 0:
        raise BuildFailed(last_lines[-1] if last_lines else f"the compiling process exited with status {returncode}")


# -- the child ---------------------------------------------------------------------------------


def _say(what: str) -> None:
    print(f"{PROGRESS}{what}", flush=True)


def _convert_encoder(model: Any, precision: Precision, shapes: Shapes) -> Any:
    import torch

    openvino = import_openvino()
    from daemon.captions.blip_split import ImageEncoder

    pixels = torch.zeros(1, 3, shapes.input_size, shapes.input_size)
    encoder = openvino.convert_model(ImageEncoder(model).eval(), example_input=(pixels,))
    # Any number of images: a lone photo runs alone, a burst in batches (compiled once).
    encoder.reshape({encoder.inputs[0]: [-1, 3, shapes.input_size, shapes.input_size]})
    for output, name in zip(encoder.outputs, ("image_embeds", "cross_keys", "cross_values"), strict=True):
        output.get_tensor().set_names({name})
    return _cross_in_step_precision(encoder, precision, output=True)


def _convert_step(model: Any, precision: Precision, shapes: Shapes) -> Any:
    import torch

    openvino = import_openvino()
    from daemon.captions.blip_split import DecoderStep

    text = model.config.text_config
    layers, heads = text.num_hidden_layers, text.num_attention_heads
    head_size = text.hidden_size // heads
    length = shapes.max_new_tokens
    vision = model.config.vision_config
    patches = (shapes.input_size // vision.patch_size) ** 2 + 1
    cross = torch.zeros(layers, 1, heads, patches, head_size)
    past = torch.zeros(layers, 1, heads, length, head_size)
    inputs = {
        "token": (torch.zeros(1, 1, dtype=torch.int64), [-1, 1]),
        "position": (torch.zeros(1, dtype=torch.int64), [1]),
        "past_mask": (torch.zeros(1, 1, 1, length), [1, 1, 1, length]),
        "logit_bias": (torch.zeros(text.vocab_size), [text.vocab_size]),
        "past_keys": (past, [layers, -1, heads, length, head_size]),
        "past_values": (past, [layers, -1, heads, length, head_size]),
        "cross_keys": (cross, [layers, -1, heads, patches, head_size]),
        "cross_values": (cross, [layers, -1, heads, patches, head_size]),
    }
    step = openvino.convert_model(DecoderStep(model).eval(), example_input=tuple(value for value, _ in inputs.values()))
    step.reshape({step.input(name): shape for name, (_, shape) in inputs.items()})
    for output, name in zip(step.outputs, ("next_token", "new_keys", "new_values"), strict=True):
        output.get_tensor().set_names({name})
    return _cross_in_step_precision(step, precision, output=False)


def _cross_in_step_precision(piece: Any, precision: Precision, *, output: bool) -> Any:
    """The cross-attention keys/values (2 x 85 MB per batch of 8 in float32) pass from the
    encoder to every step in the step's precision: read as they are at every token."""
    if precision.step == "float32":
        return piece
    openvino = import_openvino()
    from openvino.preprocess import PrePostProcessor

    element = openvino.Type.bf16 if precision.step == "bfloat16" else openvino.Type.f16
    processing = PrePostProcessor(piece)
    for name in ("cross_keys", "cross_values"):
        (processing.output(name) if output else processing.input(name)).tensor().set_element_type(element)
    return processing.build()


def build_here(model_folder: Path, folder: Path, expected: dict[str, Any], precision: Precision, shapes: Shapes) -> None:
    """The child's work: convert each piece, save it and free it; files into a temporary
    sibling, manifest last, then a rename, so a crash leaves no half cache."""
    import torch
    from transformers import BlipForConditionalGeneration

    openvino = import_openvino()
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        _say("loading the checkpoint")
        model = BlipForConditionalGeneration.from_pretrained(
            model_folder, local_files_only=True, attn_implementation="eager", dtype=torch.float32
        ).eval()
        for name, what, convert in (
            ("encoder", "the image encoder", _convert_encoder),
            ("step", "the caption decoder", _convert_step),
        ):
            _say(f"converting {what}")
            with torch.no_grad(), warnings.catch_warnings():
                # Tracing touches every attribute of the model, deprecated ones included, and
                # warns about Python values it fixes: nothing a user can act on.
                warnings.simplefilter("ignore")
                piece = convert(model, precision, shapes)
            # A piece run in half precision keeps float16 weights (half the file, and of what
            # the runtime keeps of them: 190 MB less for BLIP-base's encoder); one run in
            # float32 keeps the checkpoint's own values.
            half = (precision.encoder if name == "encoder" else precision.step) != "float32"
            openvino.save_model(piece, building / f"{name}.xml", compress_to_fp16=half)
            del piece
            gc.collect()
        del model
        gc.collect()
        _say("checking the files")
        files = {name: file_record(building / name) for name in FILES}
        (building / MANIFEST).write_text(json.dumps({**expected, "files": files}, indent=2), encoding="utf-8")
        if cache_problem(folder, expected) is None:
            return  # another process (a recaption, a second daemon) finished the same meanwhile
        shutil.rmtree(folder, ignore_errors=True)
        building.rename(folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    try:
        build_here(
            Path(spec["model_folder"]),
            Path(spec["folder"]),
            spec["expected"],
            Precision(**spec["precision"]),
            Shapes(**spec["shapes"]),
        )
    except Exception as error:  # noqa: BLE001 - one line for the daemon's log, not a traceback
        detail = str(error).strip().splitlines()
        print(f"{type(error).__name__}: {detail[0] if detail else 'no detail'}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
