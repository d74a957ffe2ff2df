"""BLIP captions through OpenVINO: compiled once from the checkpoint, cached next to it.

Eager PyTorch runs BLIP without fused attention and its decoder step by step through Python,
far from what the CPU can do. OpenVINO compiles the two pieces of `blip_split` for the CPU
(any number of images at the model's input size; a self-attention cache of `max_new_tokens`
positions) and runs each in a precision the CPU computes natively.

The two pieces get different precisions under caption.dtype = auto, from bench/caption.py's
fidelity report: the vision encoder keeps its features in bfloat16 (cosine 1.0000 with
float32), but a decoder step in bfloat16 flips captions (53% of words equal to float32's on
the stand-in model, below eager torch bfloat16's 66%), while float16, with 3 more mantissa
bits, keeps 95% and runs faster still where the CPU has float16 arithmetic (AVX512-FP16).

The compiled form is produced from the checkpoint on the first start, in a child process
(daemon/captions/openvino_build.py: about 20 s for BLIP-base on 2 cores), and saved next to the
model under a key of the checkpoint's hash, OpenVINO's version, the precision and the shapes
(daemon/captions/openvino_cache.py, which also says how a start checks it cheaply). A changed
checkpoint, an upgrade or a damaged file is never trusted.

The batch is as large as the work at hand (a lone photo runs alone, at once); every image of a
batch goes through the same computation as alone, so its caption does not depend on which
other images share the batch (tests/daemon/captions/test_openvino_blip.py checks the tokens).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daemon.captions import openvino_build
from daemon.captions.errors import CaptionCancelled
from daemon.captions.openvino_cache import (
    CACHE_FOLDER,
    FILES,
    FORMAT,
    MANIFEST,
    Precision,
    Shapes,
    cache_name,
    cache_problem,
    checkpoint_digest,
    import_openvino,
    known_checkpoint_digest,
    openvino_version,
    remove_stale,
)

__all__ = ["CACHE_FOLDER", "FILES", "MANIFEST", "CompiledBlip", "Precision", "Shapes", "TokenIds", "checkpoint_digest", "load"]

log = logging.getLogger("htx.caption")

# Added to the score of a cached position not yet filled: its softmax weight is exactly 0.
MASKED = -1e9
# caption.dtype names -> OpenVINO's inference precision names and the capability that makes
# each one native (float32 always is).
PRECISIONS = {"float32": ("f32", None), "bfloat16": ("bf16", "BF16"), "float16": ("f16", "FP16")}


@dataclass(frozen=True)
class TokenIds:
    start: int  # every caption starts from it (BLIP's bos, "[DEC]")
    end: int  # a caption ends after it (BLIP's sep, "[SEP]")
    pad: int  # after the end, while other captions of the batch go on


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


@dataclass(frozen=True)
class CacheFolder:
    """The cache a checkpoint gets under its settings, and what its manifest must say."""

    folder: Path
    expected: dict[str, Any]
    digest: str


def cache_folder(model_folder: Path, cache_root: Path, precision: Precision, shapes: Shapes, *, verify: bool = False) -> CacheFolder:
    digest = known_checkpoint_digest(model_folder, cache_root, verify=verify)
    expected = {
        "format": FORMAT,
        "openvino": openvino_version(),
        "precision": str(precision),
        "checkpoint_sha256": digest,
        **asdict(shapes),
    }
    return CacheFolder(cache_root / cache_name(digest, precision, shapes), expected, digest)


def load(
    model_folder: Path,
    cache_root: Path,
    *,
    setting: str,
    shapes: Shapes,
    batch_size: int,
    threads: int,
    tokens: TokenIds,
    progress: Callable[[str], None] = lambda what: None,
) -> CompiledBlip:
    """The compiled captioner for the checkpoint in `model_folder`, from its cache or built
    now (in a child process: openvino_build.BuildFailed when it cannot be)."""
    precision = resolve_precision(setting)
    cache_root.mkdir(parents=True, exist_ok=True)
    cache = cache_folder(model_folder, cache_root, precision, shapes)
    problem = cache_problem(cache.folder, cache.expected)
    if problem is not None:
        about = openvino_build.expected_seconds(model_folder)
        log.info(
            "compiling the caption model for openvino, %s (%s): about %d s, once; cache: %s", precision, problem, about, cache.folder
        )
        started = time.monotonic()
        first = f"preparing the caption model for this CPU (first start, about {about} s)"
        progress(f"{first}: starting")
        openvino_build.build(model_folder, cache.folder, cache.expected, precision, shapes, lambda what: progress(f"{first}: {what}"))
        remove_stale(cache_root, cache.digest)
        log.info("compiled the caption model in %.0f s", time.monotonic() - started)
        progress(f"{first}: loading it")
    return CompiledBlip(cache.folder, precision=precision, batch_size=batch_size, threads=threads, tokens=tokens)


def verify(model_folder: Path, cache_root: Path, precision: Precision, shapes: Shapes) -> tuple[Path, str | None]:
    """Hash the checkpoint and its compiled cache again, whatever their signatures say: the
    cache's folder, and why it cannot be used (None: it can)."""
    cache = cache_folder(model_folder, cache_root, precision, shapes, verify=True)
    return cache.folder, cache_problem(cache.folder, cache.expected, verify=True)


class CompiledBlip:
    """The compiled encoder and decoder step, and the greedy loop over them; one thread uses it.

    A batch is at most `batch_size` images, run at its own size: the step's work is reading
    its weights once per token for the whole batch, so a batch of 8 costs about twice a lone
    image, and a lone image costs no padding. The encoder takes one image at a time: its work
    grows with the images (measured, 0.21 s an image alone or in eights), while its activations
    for eight held 700 MB more than for one.
    """

    def __init__(self, folder: Path, *, precision: Precision, batch_size: int, threads: int, tokens: TokenIds) -> None:
        openvino = import_openvino()
        self._openvino = openvino
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
        self.batch_size = batch_size
        self._encoder = compiled("encoder.xml", precision.encoder)
        self._step = compiled("step.xml", precision.step)
        step_inputs = {port.get_any_name(): port.get_partial_shape() for port in self._step.model_inputs}
        layers, _, heads, length, head_size = (dimension.get_length() if dimension.is_static else 0 for dimension in step_inputs["past_keys"])
        self._cache_shape = (layers, heads, length, head_size)
        self.max_new_tokens = length
        # The step reads these arrays in place (shared memory): the loop writes them between steps.
        self._position = np.zeros(1, dtype=np.int64)
        self._past_mask = np.zeros((1, 1, 1, length), dtype=np.float32)
        self._logit_bias = np.zeros(step_inputs["logit_bias"].to_shape()[0], dtype=np.float32)
        for name in ("position", "past_mask", "logit_bias"):
            self._step.set_tensor(name, openvino.Tensor(getattr(self, f"_{name}"), shared_memory=True))
        self._buffers: dict[int, _StepBuffers] = {}
        cross = self._encoder.model_outputs[1]
        self._cross_type = cross.get_element_type()
        self._cross_shape = [dimension.get_length() if dimension.is_static else 1 for dimension in cross.get_partial_shape()]
        # Handed to the step between batches, so a batch's cross keys/values (42 MB an image
        # in float32) are not kept while nothing is captioned.
        self._idle_cross = openvino.Tensor(self._cross_type, self._cross_shape)
        drop_file_pages(folder)

    @property
    def input_size(self) -> int:
        return int(self._encoder.model_inputs[0].get_partial_shape()[-1].get_length())

    def _buffers_for(self, count: int) -> _StepBuffers:
        """The token and self-attention cache arrays of a batch of `count` (a few MB each),
        made once per size and handed to the step in place."""
        buffers = self._buffers.get(count)
        if buffers is None:
            layers, heads, length, head_size = self._cache_shape
            keys = np.zeros((layers, count, heads, length, head_size), dtype=np.float32)
            buffers = _StepBuffers(np.zeros((count, 1), dtype=np.int64), keys, np.zeros_like(keys))
            self._buffers[count] = buffers
        for name in ("token", "past_keys", "past_values"):
            self._step.set_tensor(name, self._openvino.Tensor(getattr(buffers, name), shared_memory=True))
        return buffers

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        """The vision encoder's output (the fidelity report compares it)."""
        features = []
        for index in range(len(pixel_values)):
            self._encoder.infer({"pixel_values": np.ascontiguousarray(pixel_values[index : index + 1], dtype=np.float32)})
            features.append(self._encoder.get_tensor("image_embeds").data.copy())
        return np.concatenate(features)

    def _encode(self, pixel_values: np.ndarray) -> None:
        """Each image through the encoder, its cross keys/values into the step's inputs."""
        shape = list(self._cross_shape)
        shape[1] = len(pixel_values)
        cross = {name: self._openvino.Tensor(self._cross_type, shape) for name in ("cross_keys", "cross_values")}
        for index in range(len(pixel_values)):
            self._encoder.infer({"pixel_values": np.ascontiguousarray(pixel_values[index : index + 1], dtype=np.float32)})
            for name, tensor in cross.items():
                tensor.data[:, index] = self._encoder.get_tensor(name).data[:, 0]
        for name, tensor in cross.items():
            self._step.set_tensor(name, tensor)

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
        try:
            self._encode(pixel_values)
            return self._decode(self._buffers_for(count), count, limit, min_new_tokens, cancel, forced)
        finally:
            for name in ("cross_keys", "cross_values"):
                self._step.set_tensor(name, self._idle_cross)
            drop_file_pages(self.folder)

    def _decode(
        self,
        buffers: _StepBuffers,
        count: int,
        limit: int,
        min_new_tokens: int,
        cancel: threading.Event,
        forced: list[list[int]] | None,
    ) -> list[list[int]]:
        buffers.past_keys.fill(0.0)
        buffers.past_values.fill(0.0)
        self._past_mask.fill(MASKED)
        buffers.token.fill(self.tokens.start)
        ended = np.zeros(count, dtype=bool)
        captions = [[self.tokens.start] for _ in range(count)]
        for position in range(limit):
            if cancel.is_set():
                raise CaptionCancelled()
            self._position[0] = position
            self._logit_bias[self.tokens.end] = MASKED if position < min_new_tokens else 0.0
            self._step.infer()
            chosen = self._step.get_tensor("next_token").data
            buffers.past_keys[:, :, :, position] = self._step.get_tensor("new_keys").data[:, :, :, 0]
            buffers.past_values[:, :, :, position] = self._step.get_tensor("new_values").data[:, :, :, 0]
            self._past_mask[..., position] = 0.0
            for index in np.flatnonzero(~ended):
                captions[index].append(int(chosen[index]))
            ended |= chosen == self.tokens.end
            if ended.all():
                break
            buffers.token[:, 0] = np.where(ended, self.tokens.pad, chosen)
            if forced is not None:
                for index, caption in enumerate(forced):
                    buffers.token[index, 0] = caption[position + 1] if position + 1 < len(caption) else self.tokens.pad
        return captions


MADV_DONTNEED = 4


@functools.cache
def _madvise() -> Any:
    """glibc's madvise, or None where there is none."""
    name = ctypes.util.find_library("c")
    try:
        function = getattr(ctypes.CDLL(name, use_errno=True), "madvise") if name else None
    except (OSError, AttributeError):
        return None
    if function is not None:
        function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return function


def drop_file_pages(folder: Path) -> None:
    """Take the pages of the compiled files in `folder` out of this process's memory.

    OpenVINO maps the weights file and, compiling (or at the first inference), repacks the
    weights for the CPU into memory of its own; the file's pages it read stay resident and
    count in RSS (measured: 480 MB of BLIP-base's float32 decoder) though hardly read again.
    The mapping is private and never written, so a page read afterwards comes back from the
    file (the page cache) as it was: dropping them changes nothing but the memory held.
    Linux only; elsewhere, or on any error, nothing is done.
    """
    madvise = _madvise()
    if madvise is None:
        return
    prefix = str(folder.resolve()) + "/"
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as handle:
            ranges = [line.split(None, 5) for line in handle]
    except OSError:
        return
    for fields in ranges:
        if len(fields) == 6 and fields[5].strip().startswith(prefix) and fields[5].strip().endswith(".bin"):
            start, end = (int(value, 16) for value in fields[0].split("-"))
            madvise(start, end - start, MADV_DONTNEED)


@dataclass
class _StepBuffers:
    token: np.ndarray  # [B,1] the token each caption feeds the next step
    past_keys: np.ndarray  # [L,B,H,T,D] the self-attention cache
    past_values: np.ndarray
