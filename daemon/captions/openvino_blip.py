"""BLIP captions through OpenVINO: compiled once from the checkpoint, cached next to it.

Eager PyTorch runs BLIP without fused attention and its decoder step by step through Python,
far from what the CPU can do. OpenVINO compiles the two pieces of `blip_split` for the CPU at
fixed shapes (a batch of `batch_size` images at the model's input size; a self-attention cache
of `max_new_tokens` positions) and runs each in a precision the CPU computes natively.

The two pieces get different precisions under caption.dtype = auto, from bench/caption.py's
fidelity report: the vision encoder keeps its features in bfloat16 (cosine 1.0000 with
float32), but a decoder step in bfloat16 flips captions (53% of words equal to float32's on
the stand-in model, below eager torch bfloat16's 66%), while float16, with 3 more mantissa
bits, keeps 95% and runs faster still where the CPU has float16 arithmetic (AVX512-FP16).

The compiled form is produced from the checkpoint `from_pretrained` loaded, offline, on the
first start (about a minute for BLIP-base), and saved next to the model under a key of the
checkpoint's hash, OpenVINO's version, the precision and the shapes. Every start checks the
cache against its manifest (the key, and the hash of each file) and rebuilds it when anything
differs, so a changed checkpoint, an upgrade or a damaged file is never trusted.

Captions do not depend on the other images of a batch: every batch has the compiled size
(short ones are padded), so each image goes through exactly the same computation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daemon.captions.captioner import CaptionCancelled

log = logging.getLogger("htx.caption")

# Bumped whenever blip_split or the conversion changes what the compiled files compute.
FORMAT = 2
CACHE_FOLDER = "htx-compiled"  # inside the model's folder (or the fallback) every cache lives in
MANIFEST = "manifest.json"
FILES = ("encoder.xml", "encoder.bin", "step.xml", "step.bin")
# Added to the score of a cached position not yet filled: its softmax weight is exactly 0.
MASKED = -1e9
# caption.dtype names -> OpenVINO's inference precision names and the capability that makes
# each one native (float32 always is).
PRECISIONS = {"float32": ("f32", None), "bfloat16": ("bf16", "BF16"), "float16": ("f16", "FP16")}


@dataclass(frozen=True)
class Precision:
    """The precision of each compiled piece: caption.dtype names."""

    encoder: str
    step: str

    def __str__(self) -> str:
        """"bfloat16+float16" (encoder+decoder step), or one name when both agree."""
        return self.encoder if self.encoder == self.step else f"{self.encoder}+{self.step}"


@dataclass(frozen=True)
class Shapes:
    """What the compiled graphs are fixed to; part of the cache's key."""

    batch_size: int
    input_size: int
    max_new_tokens: int


@dataclass(frozen=True)
class TokenIds:
    start: int  # every caption starts from it (BLIP's bos, "[DEC]")
    end: int  # a caption ends after it (BLIP's sep, "[SEP]")
    pad: int  # after the end, while other captions of the batch go on


def openvino_version() -> str:
    return import_openvino().get_version().split("-")[0]


def native_precisions() -> set[str]:
    """The caption.dtype values the CPU computes in hardware, per OpenVINO."""
    capabilities = set(import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return {name for name, (_, capability) in PRECISIONS.items() if capability is None or capability in capabilities}


def resolve_precision(setting: str) -> Precision:
    """caption.dtype for this runtime's two pieces.

    auto: the encoder in bfloat16 where native, the decoder step in float16 where native, each
    else float32 (a bfloat16 step is fast but flips captions: see the module's docstring). An
    explicit precision applies to both; one the CPU lacks runs as float32, said once in the
    log: OpenVINO would quietly do the same, and the caption records must not claim what did
    not happen.
    """
    native = native_precisions()
    if setting == "auto":
        return Precision(
            encoder="bfloat16" if "bfloat16" in native else "float32",
            step="float16" if "float16" in native else "float32",
        )
    if setting not in native:
        log.warning("caption.dtype = %s is not native on this CPU for openvino; running float32", setting)
        setting = "float32"
    return Precision(setting, setting)


def checkpoint_digest(folder: Path) -> str:
    """sha256 over the files `from_pretrained` builds the model from: config and weights."""
    digest = hashlib.sha256()
    names = sorted(
        path.name
        for path in folder.iterdir()
        if path.name == "config.json" or path.suffix == ".safetensors" or path.name.startswith("pytorch_model")
    )
    for name in names:
        digest.update(name.encode() + b"\0")
        digest.update(_file_digest(folder / name).encode())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def cache_name(digest: str, precision: Precision, shapes: Shapes) -> str:
    return (
        f"openvino-{openvino_version()}-{precision}-b{shapes.batch_size}-s{shapes.input_size}"
        f"-t{shapes.max_new_tokens}-f{FORMAT}-{digest[:16]}"
    )


def cache_problem(folder: Path, expected: dict[str, Any]) -> str | None:
    """Why the cache in `folder` cannot be used as it is, or None when it can."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no compiled model yet"
    except (OSError, ValueError) as error:
        return f"unreadable manifest ({error})"
    for key, value in expected.items():
        if manifest.get(key) != value:
            return f"made for another {key}"
    files = manifest.get("files", {})
    for name in FILES:
        try:
            if _file_digest(folder / name) != files.get(name):
                return f"{name} changed since it was made"
        except OSError as error:
            return f"{name} unreadable ({error.strerror or error})"
    return None


def import_openvino() -> Any:
    """The openvino module, without its usage telemetry.

    Importing openvino (and converting a model) reports usage to Google Analytics through the
    openvino-telemetry package, and with no consent file in the home folder that counts as
    consent. A server must not phone home on its own: OpenVINO runs without that package, and
    the import of a module set to None in sys.modules fails, so OpenVINO uses its own stand-in.
    """
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    import openvino

    return openvino


def _build(folder: Path, model: Any, precision: Precision, shapes: Shapes) -> None:
    """Convert the two pieces of `model` (float32 torch) at fixed shapes; save them in `folder`."""
    import torch

    openvino = import_openvino()
    from openvino.preprocess import PrePostProcessor

    from daemon.captions.blip_split import DecoderStep, ImageEncoder

    text = model.config.text_config
    layers, heads = text.num_hidden_layers, text.num_attention_heads
    head_size = text.hidden_size // heads
    batch, length = shapes.batch_size, shapes.max_new_tokens
    vision = model.config.vision_config
    patches = (shapes.input_size // vision.patch_size) ** 2 + 1
    pixels = torch.zeros(batch, 3, shapes.input_size, shapes.input_size)
    cross = torch.zeros(layers, batch, heads, patches, head_size)
    past = torch.zeros(layers, batch, heads, length, head_size)
    step_inputs = {
        "token": torch.zeros(batch, 1, dtype=torch.int64),
        "position": torch.zeros(1, dtype=torch.int64),
        "past_mask": torch.zeros(1, 1, 1, length),
        "logit_bias": torch.zeros(text.vocab_size),
        "past_keys": past,
        "past_values": past,
        "cross_keys": cross,
        "cross_values": cross,
    }
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing touches every attribute of the model, deprecated ones included, and warns
        # about Python values it fixes: nothing a user can act on.
        warnings.simplefilter("ignore")
        encoder = openvino.convert_model(ImageEncoder(model).eval(), example_input=(pixels,))
        step = openvino.convert_model(DecoderStep(model).eval(), example_input=tuple(step_inputs.values()))
    encoder.reshape({encoder.inputs[0]: list(pixels.shape)})
    step.reshape({step.input(name): list(value.shape) for name, value in step_inputs.items()})
    for piece, names in ((encoder, ("image_embeds", "cross_keys", "cross_values")), (step, ("next_token", "new_keys", "new_values"))):
        for output, name in zip(piece.outputs, names, strict=True):
            output.get_tensor().set_names({name})
    if precision.step != "float32":
        # The cross-attention keys/values (2 x 85 MB per batch of 8 in float32) pass from the
        # encoder to every step in the step's precision: read as they are at every token.
        element = openvino.Type.bf16 if precision.step == "bfloat16" else openvino.Type.f16
        encoder_io, step_io = PrePostProcessor(encoder), PrePostProcessor(step)
        for name in ("cross_keys", "cross_values"):
            encoder_io.output(name).tensor().set_element_type(element)
            step_io.input(name).tensor().set_element_type(element)
        encoder, step = encoder_io.build(), step_io.build()
    # Float32 weights: the precision is applied when compiling, from the checkpoint's values.
    openvino.save_model(encoder, folder / "encoder.xml", compress_to_fp16=False)
    openvino.save_model(step, folder / "step.xml", compress_to_fp16=False)


def build_cache(folder: Path, model: Any, expected: dict[str, Any], precision: Precision, shapes: Shapes) -> None:
    """Build into a temporary sibling, manifest last, then rename: a crash leaves no half cache."""
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        _build(building, model, precision, shapes)
        files = {name: _file_digest(building / name) for name in FILES}
        (building / MANIFEST).write_text(json.dumps({**expected, "files": files}, indent=2), encoding="utf-8")
        if cache_problem(folder, expected) is None:
            return  # another process (a recaption, a second daemon) finished the same meanwhile
        shutil.rmtree(folder, ignore_errors=True)
        building.rename(folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def remove_stale(cache_root: Path, digest: str) -> None:
    """Caches of an earlier checkpoint in the same folder (the model was replaced): 1 GB each."""
    for stale in cache_root.glob("openvino-*"):
        if stale.is_dir() and not stale.name.endswith(digest[:16]) and ".building-" not in stale.name:
            log.info("removing the compiled model of an earlier checkpoint: %s", stale.name)
            shutil.rmtree(stale, ignore_errors=True)


def load(
    model_folder: Path,
    cache_root: Path,
    *,
    setting: str,
    shapes: Shapes,
    threads: int,
    tokens: TokenIds,
    load_torch_model: Callable[[], Any],
) -> CompiledBlip:
    """The compiled captioner for the checkpoint in `model_folder`, from its cache or built now.

    `load_torch_model` gives the float32 torch model; it is called only when building.
    """
    precision = resolve_precision(setting)
    digest = checkpoint_digest(model_folder)
    folder = cache_root / cache_name(digest, precision, shapes)
    expected = {
        "format": FORMAT,
        "openvino": openvino_version(),
        "precision": str(precision),
        "checkpoint_sha256": digest,
        **asdict(shapes),
    }
    problem = cache_problem(folder, expected)
    if problem is not None:
        log.info("compiling the caption model for openvino, %s (%s): about a minute, once; cache: %s", precision, problem, folder)
        started = time.monotonic()
        build_cache(folder, load_torch_model(), expected, precision, shapes)
        remove_stale(cache_root, digest)
        log.info("compiled the caption model in %.0f s", time.monotonic() - started)
    return CompiledBlip(folder, precision=precision, threads=threads, tokens=tokens)


class CompiledBlip:
    """The compiled encoder and decoder step, and the greedy loop over them; one thread uses it."""

    def __init__(self, folder: Path, *, precision: Precision, threads: int, tokens: TokenIds) -> None:
        openvino = import_openvino()
        core = openvino.Core()

        def compiled(name: str, piece_precision: str) -> Any:
            options: dict[str, Any] = {
                "INFERENCE_PRECISION_HINT": PRECISIONS[piece_precision][0],
                "PERFORMANCE_HINT": "LATENCY",  # one batch at a time, on every core
            }
            if threads:
                options["INFERENCE_NUM_THREADS"] = threads
            return core.compile_model(folder / name, "CPU", options).create_infer_request()

        self.precision = precision
        self.tokens = tokens
        self.folder = folder
        self._encoder = compiled("encoder.xml", precision.encoder)
        self._step = compiled("step.xml", precision.step)
        layers, batch, heads, length, head_size = self._step.get_tensor("past_keys").shape
        self.batch_size, self.max_new_tokens = batch, length
        # The step reads these arrays in place (shared memory): the loop writes them between steps.
        self._token = np.zeros((batch, 1), dtype=np.int64)
        self._position = np.zeros(1, dtype=np.int64)
        self._past_mask = np.zeros((1, 1, 1, length), dtype=np.float32)
        self._logit_bias = np.zeros(self._step.get_tensor("logit_bias").shape, dtype=np.float32)
        self._past_keys = np.zeros((layers, batch, heads, length, head_size), dtype=np.float32)
        self._past_values = np.zeros_like(self._past_keys)
        for name in ("token", "position", "past_mask", "logit_bias", "past_keys", "past_values"):
            self._step.set_tensor(name, openvino.Tensor(getattr(self, f"_{name}"), shared_memory=True))

    @property
    def input_size(self) -> int:
        return int(self._encoder.get_tensor("pixel_values").shape[-1])

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        """The vision encoder's output for one compiled batch (the fidelity report compares it)."""
        self._encoder.infer({"pixel_values": self._padded(pixel_values)})
        return self._encoder.get_tensor("image_embeds").data[: len(pixel_values)].copy()

    def _padded(self, pixel_values: np.ndarray) -> np.ndarray:
        missing = self.batch_size - len(pixel_values)
        if missing == 0:
            return np.ascontiguousarray(pixel_values, dtype=np.float32)
        padding = np.zeros((missing, *pixel_values.shape[1:]), dtype=np.float32)
        return np.concatenate([pixel_values.astype(np.float32, copy=False), padding])

    def generate(
        self,
        pixel_values: np.ndarray,
        *,
        max_new_tokens: int,
        min_new_tokens: int = 0,
        cancel: threading.Event | None = None,
    ) -> list[list[int]]:
        """Greedy token ids per image: start token, words, end token (if reached within the limit)."""
        cancel = cancel or threading.Event()
        limit = min(max_new_tokens, self.max_new_tokens)
        captions: list[list[int]] = []
        for start in range(0, len(pixel_values), self.batch_size):
            chunk = pixel_values[start : start + self.batch_size]
            captions.extend(self._generate_batch(chunk, limit, min_new_tokens, cancel))
        return captions

    def teacher_forced(self, pixel_values: np.ndarray, captions: list[list[int]]) -> list[list[int]]:
        """The token chosen at each position when fed `captions` (start token first) rather than
        its own choices: the fidelity report's top-1 agreement, free of earlier divergence."""
        chosen: list[list[int]] = []
        for start in range(0, len(pixel_values), self.batch_size):
            forced = captions[start : start + self.batch_size]
            limit = max(len(caption) for caption in forced) - 1
            chosen.extend(
                self._generate_batch(pixel_values[start : start + self.batch_size], limit, limit, threading.Event(), forced)
            )
        return [caption[1:] for caption in chosen]

    def _generate_batch(
        self,
        pixel_values: np.ndarray,
        limit: int,
        min_new_tokens: int,
        cancel: threading.Event,
        forced: list[list[int]] | None = None,
    ) -> list[list[int]]:
        if cancel.is_set():
            raise CaptionCancelled()
        count = len(pixel_values)
        self._encoder.infer({"pixel_values": self._padded(pixel_values)})
        for name in ("cross_keys", "cross_values"):
            self._step.set_tensor(name, self._encoder.get_tensor(name))
        self._past_keys.fill(0.0)
        self._past_values.fill(0.0)
        self._past_mask.fill(MASKED)
        self._token.fill(self.tokens.start)
        ended = np.zeros(self.batch_size, dtype=bool)
        ended[count:] = True  # padding rows
        captions = [[self.tokens.start] for _ in range(count)]
        for position in range(limit):
            if cancel.is_set():
                raise CaptionCancelled()
            self._position[0] = position
            self._logit_bias[self.tokens.end] = MASKED if position < min_new_tokens else 0.0
            self._step.infer()
            chosen = self._step.get_tensor("next_token").data
            self._past_keys[:, :, :, position] = self._step.get_tensor("new_keys").data[:, :, :, 0]
            self._past_values[:, :, :, position] = self._step.get_tensor("new_values").data[:, :, :, 0]
            self._past_mask[..., position] = 0.0
            for index in np.flatnonzero(~ended):
                captions[index].append(int(chosen[index]))
            ended |= chosen == self.tokens.end
            if ended.all():
                break
            self._token[:, 0] = np.where(ended, self.tokens.pad, chosen)
            if forced is not None:
                for index, caption in enumerate(forced):
                    self._token[index, 0] = caption[position + 1] if position + 1 < len(caption) else self.tokens.pad
        return captions
