"""Captioners: what turns pixels into a sentence.

The daemon talks to a `Captioner` only. "none" (`caption.model = "none"`) is the captioner
that makes no captions: images finish `done` with `caption: null`. Anything else is a BLIP
model (daemon/captions/blip.py), by hub id or folder; daemon/captions/factory.py picks one.
This module imports no implementation, so that they may all import it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from PIL import Image

from daemon.captions.errors import CaptionerUnavailable


class Captioner(Protocol):
    @property
    def model_name(self) -> str | None:
        """Stored as `caption_model`; None when no model is configured."""

    @property
    def device(self) -> str | None:
        """Where the model runs ("cpu", "cuda:0"); None when there is no model, or not loaded yet."""

    @property
    def runtime(self) -> str | None:
        """Which runtime and precision make the captions ("openvino bfloat16", "torch float32");
        None when there is no model or it is not loaded yet."""

    @property
    def input_size(self) -> int | None:
        """The square edge, in pixels, of the images `caption` takes; None: it needs no pixels."""

    @property
    def settings(self) -> str:
        """How it runs ("cpu, bfloat16"), for logs and the daemon's status line."""

    def load(self, progress: Callable[[str], None] | None = None) -> None:
        """Make the model ready (slow: seconds; a first start may compile it, a minute or
        more, telling `progress` what it does); raises CaptionerUnavailable if it cannot be."""

    def caption(self, images: Sequence[Image.Image], *, cancel: threading.Event | None = None) -> list[str]:
        """One caption per image, in order. Raises CaptionerUnavailable if the model is missing,
        CaptionCancelled if `cancel` is set before the captions are complete."""


class NoCaptioner:
    """`caption.model = "none"`: no model, no captions, and no error either."""

    model_name = None
    device = None
    runtime = None
    input_size = None
    settings = "off"

    def load(self, progress: Callable[[str], None] | None = None) -> None:
        pass

    def caption(self, images: Sequence[Image.Image], *, cancel: threading.Event | None = None) -> list[str]:
        raise CaptionerUnavailable("captioning is switched off (caption.model = \"none\")")
