"""Captioners: what turns pixels into a sentence.

The daemon talks to a `Captioner` only. "none" (`caption.model = "none"`) is the captioner
that makes no captions: images finish `done` with `caption: null`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from PIL import Image


class CaptionerUnavailable(Exception):
    """The model cannot be used (not downloaded, wrong path...); the message says how to fix it."""


class Captioner(Protocol):
    @property
    def model_name(self) -> str | None:
        """Stored as `caption_model`; None when no model is configured."""

    @property
    def device(self) -> str | None:
        """Where the model runs ("cpu", "cuda:0"); None when there is no model."""

    @property
    def input_size(self) -> int | None:
        """The square edge, in pixels, of the images `caption` takes; None: it needs no pixels."""

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, in order. Raises CaptionerUnavailable if the model is missing."""


class NoCaptioner:
    """`caption.model = "none"`: no model, no captions, and no error either."""

    model_name = None
    device = None
    input_size = None

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        raise CaptionerUnavailable("captioning is switched off (caption.model = \"none\")")
