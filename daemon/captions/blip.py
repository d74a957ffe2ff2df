"""Salesforce BLIP through transformers: load once (by hub id or folder), caption batches.

torch and transformers are imported inside `load`, so a daemon without captions, or one whose
model is still loading in the background, never waits for them.

The daemon never goes to the network: a hub id is looked up in the local Hugging Face cache
only (`local_files_only`). Without that, transformers retries the hub for minutes when there is
no network. `htx model download` is the one networked path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import gc
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from daemon.captions.blip_torch import quantize_int8, resolve_dtype, stop_when_set
from daemon.captions.errors import CaptionCancelled, CaptionerUnavailable
from daemon.captions.model_source import check_present, local_file, model_source, processor_input_size, unavailable
from models.config import CaptionConfig

log = logging.getLogger("htx.caption")

# BLIP base and large both take 384x384: the size assumed when the processor's files say nothing.
DEFAULT_INPUT_SIZE = 384
# What a BLIP checkpoint needs; the hub repos also hold pytorch_model.bin and tf_model.h5 copies.
DOWNLOAD_PATTERNS = ["*.json", "*.txt", "*.safetensors"]


# Present where a GPU driver is loaded (NVIDIA's, AMD's ROCm): without one, CUDA cannot be
# available, and "auto" is the CPU without importing torch to ask (seconds, 200 MB).
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd")


def resolve_device(setting: str) -> str:
    """auto | cpu | cuda | cuda:N -> "cpu" or "cuda:N"; CaptionerUnavailable if CUDA is missing."""
    if setting == "cpu" or (setting == "auto" and not any(os.path.exists(path) for path in GPU_DRIVER_FILES)):
        return "cpu"
    import torch

    if setting == "auto" and not torch.cuda.is_available():
        return "cpu"
    if not torch.cuda.is_available():
        raise CaptionerUnavailable(
            f"caption.device = {setting} but no CUDA device is available", reason="no CUDA device"
        )
    index = int(setting[5:]) if setting.startswith("cuda:") else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise CaptionerUnavailable(
            f"caption.device = {setting} but there are {torch.cuda.device_count()} CUDA device(s)",
            reason="no such CUDA device",
        )
    return f"cuda:{index}"


def resolve_runtime(config: CaptionConfig, device: str) -> str:
    """caption.runtime -> "torch" or "openvino". auto: openvino on CPU (4-6x the captions per
    second, bench/caption.py), torch on CUDA and for what only torch does (int8, beam search)."""
    if config.runtime != "auto":
        return config.runtime
    if device != "cpu" or config.quantize != "none" or config.num_beams > 1:
        return "torch"
    return "openvino"


@functools.cache
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim") if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand the heap memory a batch's activations used back to the system.

    glibc keeps freed blocks for reuse: measured on BLIP-base in bfloat16, resident memory
    grows from 0.79 GB after loading to 1.10 GB after batches of 8, and 0.84 GB with this
    after each batch, for about 20 ms per batch of 8 (half a percent of its time).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class BlipCaptioner:
    """BlipProcessor + BlipForConditionalGeneration, loaded once by `load`, used by one thread."""

    def __init__(
        self, config: CaptionConfig, base_dir: Path, *, min_new_tokens: int = 0, cache_dir: Path | None = None
    ) -> None:
        self.config = config
        self.source = model_source(config.model, base_dir)
        # Where a compiled model is kept when the model's own folder is read-only to the service.
        self.cache_dir = cache_dir
        # Benchmarks set this to max_new_tokens: random weights never stop by themselves.
        self.min_new_tokens = min_new_tokens
        self._device: str | None = None
        self._dtype: Any = None
        self._quantized = False
        self._runtime: str | None = None
        self._compiled: Any = None  # openvino_blip.CompiledBlip when that runtime runs
        self._input_size: int | None = None  # read from the processor's files when first asked
        self._processor: Any = None  # transformers' BlipProcessor, for torch (and checkpoints blip_io cannot read)
        self._pixels: Any = None  # blip_io.Pixels and Words: the compiled runtime's, without torch
        self._words: Any = None
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.source.name

    @property
    def device(self) -> str | None:
        return self._device

    @property
    def input_size(self) -> int:
        if self._input_size is None:
            self._input_size = processor_input_size(self.source) or DEFAULT_INPUT_SIZE
        return self._input_size

    @property
    def runtime(self) -> str | None:
        """Which runtime and precision make the captions: "openvino bfloat16", "torch int8"."""
        if self._runtime is None:
            return None
        if self._compiled is not None:
            return f"{self._runtime} {self._compiled.precision}"
        precision = "int8" if self._quantized else str(self._dtype).removeprefix("torch.")
        return f"{self._runtime} {precision}"

    @property
    def settings(self) -> str:
        """How it runs, for logs and the daemon's status: "cpu, openvino bfloat16"."""
        if self._device is None:
            return "not loaded"
        return f"{self._device}, {self.runtime}"

    def load(self, progress: Callable[[str], None] | None = None) -> None:
        """Load the processor and the model; CaptionerUnavailable (with the fix) if impossible.
        `progress` hears what a first start's compilation is doing."""
        with self._lock:
            if self._runtime is None:
                self._load(progress or (lambda what: None))

    def _load(self, progress: Callable[[str], None]) -> None:
        # Checked before torch is imported (seconds): images waiting for a model that is not
        # there get their caption_error at once.
        check_present(self.source)

        device = resolve_device(self.config.device)
        runtime = resolve_runtime(self.config, device)
        if runtime == "openvino":
            device = "cpu"  # runtime = openvino with device = auto on a machine with a GPU
            try:
                self._compiled = self._load_compiled(progress)
                # Compiling converts the weights to the run's precision: the float32 read of
                # them is freed, and handed back to the system.
                gc.collect()
                release_freed_memory()
            except CaptionerUnavailable:
                raise  # the checkpoint itself is unusable: torch would fail the same way
            except Exception as error:  # noqa: BLE001 - whatever stops the optional runtime, torch can still caption
                log.warning(
                    "caption runtime openvino cannot run %s on this machine (%s: %s); captioning with torch instead",
                    self.source.name,
                    type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "no detail",
                )
                runtime = "torch"
        if runtime == "torch":
            import torch

            if self.config.threads:
                torch.set_num_threads(self.config.threads)
            processor = self._processor or self._from_pretrained("BlipProcessor")
            self._input_size = int(processor.image_processor.size["height"])
            self._load_torch(device)
            self._processor = processor
        self._device, self._runtime = device, runtime

    def _from_pretrained(self, class_name: str, **options: Any) -> Any:
        """BlipProcessor or BlipForConditionalGeneration from the checkpoint, offline; a failure
        becomes CaptionerUnavailable with the fix."""
        import transformers
        from transformers.utils import logging as transformers_logging

        # Progress bars are for terminals; daemon logs are one line per event.
        transformers_logging.disable_progress_bar()
        try:
            return getattr(transformers, class_name).from_pretrained(self.source.location, local_files_only=True, **options)
        except OSError as error:
            if self.source.is_folder:
                raise unavailable(self.source, "not a saved BLIP model", str(error)) from error
            raise unavailable(self.source, "not in the local Hugging Face cache") from error
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise unavailable(self.source, "not a usable BLIP model", f"{type(error).__name__}: {error}") from error

    def _load_model(self, dtype: Any) -> Any:
        return self._from_pretrained(
            "BlipForConditionalGeneration",
            attn_implementation="eager",  # BLIP has no SDPA attention
            dtype=dtype,
        ).eval()

    def _load_torch(self, device: str) -> None:
        dtype = resolve_dtype(self.config.dtype, device, self.config.quantize)
        quantize = self.config.quantize == "int8" and device == "cpu"
        if self.config.quantize == "int8" and not quantize:
            log.warning("caption.quantize = int8 applies on CPU only; running %s on %s unquantised", self.source.name, device)
        # float32 when quantising: int8 is made from float32 weights
        model = self._load_model(dtype).to(device)
        if quantize:
            model = quantize_int8(model)
            # The float32 Linear weights hang in reference cycles: without this, resident memory
            # stays at 1.46 GB instead of 0.73 GB for BLIP-base.
            gc.collect()
        if device == "cpu":
            release_freed_memory()
        self._model, self._dtype, self._quantized = model, dtype, quantize

    def _model_folder(self) -> Path:
        """The checkpoint's folder: the configured one, or the hub cache's snapshot."""
        if self.source.is_folder:
            return Path(self.source.location)
        return Path(local_file(self.source, "config.json") or "").parent

    def _cache_root(self, model_folder: Path, *, quiet: bool = False) -> Path:
        """Where compiled caches are kept: beside the model, or in the data folder where the
        service may only read the model's folder (a shared or root-owned cache)."""
        from daemon.captions.openvino_cache import CACHE_FOLDER

        cache_root = model_folder / CACHE_FOLDER
        try:
            cache_root.mkdir(exist_ok=True)
            if not os.access(cache_root, os.W_OK):
                raise PermissionError(errno.EACCES, "not writable", str(cache_root))
        except OSError as error:
            if self.cache_dir is None:
                raise
            fallback = self.cache_dir / CACHE_FOLDER / self.source.name.replace("/", "--")
            if not quiet:
                log.info("the compiled caption model goes to %s: %s (%s)", fallback, cache_root, error.strerror or error)
            return fallback
        return cache_root

    def verify_compiled(self) -> tuple[Path, str | None]:
        """`htx model verify`: hash the checkpoint and the compiled model of these settings
        again, every file read whole; the cache's folder and what is wrong with it (None: all
        is well)."""
        from daemon.captions import openvino_blip

        check_present(self.source)
        model_folder = self._model_folder()
        precision = openvino_blip.resolve_precision(self.config.dtype)
        shapes = openvino_blip.Shapes(self.input_size, self.config.max_new_tokens)
        return openvino_blip.verify(model_folder, self._cache_root(model_folder, quiet=True), precision, shapes)

    def _load_compiled(self, progress: Callable[[str], None]) -> Any:
        from daemon.captions import openvino_blip
        from daemon.captions.blip_io import MissingFiles, Pixels, Words

        model_folder = self._model_folder()
        cache_root = self._cache_root(model_folder)
        text_config = json.loads((model_folder / "config.json").read_text(encoding="utf-8")).get("text_config", {})
        try:
            # Read without transformers, which would import torch: seconds and 200 MB.
            self._pixels, self._words = Pixels.from_folder(model_folder), Words(model_folder)
            self._input_size = self._pixels.height
            token_id = self._words.special_ids()
        except MissingFiles:
            self._processor = processor = self._from_pretrained("BlipProcessor")
            self._input_size = int(processor.image_processor.size["height"])
            tokenizer = processor.tokenizer
            token_id = {"bos": tokenizer.bos_token_id, "sep": tokenizer.sep_token_id, "pad": tokenizer.pad_token_id}
        tokens = openvino_blip.TokenIds(
            start=text_config.get("bos_token_id", token_id["bos"]),
            end=text_config.get("sep_token_id", token_id["sep"]),
            pad=text_config.get("pad_token_id", token_id["pad"]),
        )
        return openvino_blip.load(
            model_folder,
            cache_root,
            setting=self.config.dtype,
            shapes=openvino_blip.Shapes(self.input_size, self.config.max_new_tokens),
            batch_size=self.config.batch_size,
            threads=self.config.threads,
            tokens=tokens,
            progress=progress,
        )

    def pixel_values(self, images: Sequence[Image.Image]) -> Any:
        """The model's input for `images`, as numpy (float32, channels first)."""
        if self._pixels is not None:
            return self._pixels(images)
        return self._processor(images=list(images), return_tensors="np")["pixel_values"]

    def decode(self, tokens: Sequence[Sequence[int]]) -> list[str]:
        """Captions of generated token ids, special tokens left out."""
        if self._words is not None:
            return self._words(tokens)
        return [text.strip() for text in self._processor.batch_decode(tokens, skip_special_tokens=True)]

    def caption(self, images: Sequence[Image.Image], *, cancel: threading.Event | None = None) -> list[str]:
        """One caption per image, in order, from one `generate` call."""
        return self.decode(self.generate(images, cancel=cancel))

    def generate(self, images: Sequence[Image.Image], *, cancel: threading.Event | None = None) -> list[list[int]]:
        """The generated token ids, one list per image (captions before decoding).

        A set `cancel` ends generation at the next token (a batch on CPU takes seconds, longer
        than a service may take to stop) and raises CaptionCancelled.
        """
        if self._model is None and self._compiled is None:
            raise CaptionerUnavailable(f"caption model {self.source.name} is not loaded", reason="model not loaded")
        cancel = cancel or threading.Event()
        if cancel.is_set():
            raise CaptionCancelled()
        if self._compiled is not None:
            tokens = self._compiled.generate(
                self.pixel_values(images),
                max_new_tokens=self.config.max_new_tokens,
                min_new_tokens=self.min_new_tokens,
                cancel=cancel,
            )
            release_freed_memory()
            return tokens
        import torch

        with torch.inference_mode():
            inputs = self._processor(images=list(images), return_tensors="pt")
            # A dynamically quantised model still takes float32 activations: _dtype is float32.
            pixel_values = inputs["pixel_values"].to(self._device, self._dtype)
            tokens = self._model.generate(
                pixel_values=pixel_values,
                max_new_tokens=self.config.max_new_tokens,
                min_new_tokens=self.min_new_tokens or None,
                num_beams=self.config.num_beams,
                stopping_criteria=stop_when_set(cancel),
            )
        if self._device == "cpu":
            release_freed_memory()
        if cancel.is_set():
            raise CaptionCancelled()
        return tokens.tolist()


def download(model: str) -> Path:
    """Fetch a hub model into the local Hugging Face cache (needs network); returns its folder."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, allow_patterns=DOWNLOAD_PATTERNS))
