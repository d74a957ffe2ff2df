"""What the compiled runtime needs of BLIP's processor, without transformers or torch.

Importing transformers' BlipProcessor imports torch: 3.4 s and 200 MB before the first
caption, for two small jobs a daemon can do with numpy and the `tokenizers` package from the
checkpoint's own files. `Pixels` turns images into the model's input as the processor does
(resize to its size, rescale, normalise, channels first), from `processor_config.json` or
`preprocessor_config.json`; `Words` turns token ids into the caption as `batch_decode` with
`skip_special_tokens` does, from `tokenizer.json`. tests/daemon/captions/test_blip_io.py
checks both against transformers on the same checkpoint. A checkpoint without those files
is read through transformers instead (blip.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
TOKENIZER_FILE = "tokenizer.json"


class MissingFiles(Exception):
    """The checkpoint lacks what these readers need (then transformers reads it)."""


@dataclass(frozen=True)
class Pixels:
    height: int
    width: int
    resample: int
    scale: float | None  # rescale factor, None when the processor does not rescale
    mean: np.ndarray | None  # per channel, None when it does not normalise
    std: np.ndarray | None
    resize: bool

    @classmethod
    def from_folder(cls, folder: Path) -> Pixels:
        for name in PROCESSOR_FILES:
            path = folder / name
            if path.is_file():
                data = json.loads(path.read_text(encoding="utf-8"))
                settings: dict[str, Any] = data.get("image_processor", data)
                break
        else:
            raise MissingFiles("no processor configuration")
        size = settings.get("size") or {}
        if not isinstance(size, dict) or "height" not in size or "width" not in size:
            raise MissingFiles("no image size in the processor configuration")
        normalize = settings.get("do_normalize", True)
        return cls(
            height=int(size["height"]),
            width=int(size["width"]),
            resample=int(settings.get("resample", Image.Resampling.BICUBIC)),
            scale=float(settings.get("rescale_factor", 1 / 255)) if settings.get("do_rescale", True) else None,
            mean=np.asarray(settings["image_mean"], dtype=np.float32) if normalize else None,
            std=np.asarray(settings["image_std"], dtype=np.float32) if normalize else None,
            resize=bool(settings.get("do_resize", True)),
        )

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """pixel_values [B, 3, height, width], float32."""
        arrays = []
        for image in images:
            image = image if image.mode == "RGB" else image.convert("RGB")
            if self.resize and image.size != (self.width, self.height):
                image = image.resize((self.width, self.height), resample=Image.Resampling(self.resample))
            values = np.asarray(image, dtype=np.float32)
            if self.scale is not None:
                values = values * np.float32(self.scale)
            if self.mean is not None and self.std is not None:
                values = (values - self.mean) / self.std
            arrays.append(values.transpose(2, 0, 1))
        return np.ascontiguousarray(np.stack(arrays), dtype=np.float32)


class Words:
    """Token ids -> caption text, through the checkpoint's tokenizer.json."""

    def __init__(self, folder: Path) -> None:
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise MissingFiles("no tokenizer.json")
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        self._folder = folder

    def special_ids(self) -> dict[str, int | None]:
        """The ids of the tokenizer's special tokens by role ("bos", "sep", "pad"), as its
        tokenizer_config.json names them; None for a role it does not name."""
        try:
            settings = json.loads((self._folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            settings = {}
        ids: dict[str, int | None] = {}
        for role in ("bos", "sep", "pad"):
            token = settings.get(f"{role}_token") if isinstance(settings, dict) else None
            if isinstance(token, dict):
                token = token.get("content")
            ids[role] = self._tokenizer.token_to_id(token) if isinstance(token, str) else None
        return ids

    def __call__(self, captions: Sequence[Sequence[int]]) -> list[str]:
        return [text.strip() for text in self._tokenizer.decode_batch([list(caption) for caption in captions], skip_special_tokens=True)]
