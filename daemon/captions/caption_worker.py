"""The caption worker: one thread that loads the model, then captions waiting images in batches.

Pipeline workers hand it an image already reduced to the model's input size, with an opaque
payload (the daemon's job). It loads the captioner first, in the background; until it is
`ready` the daemon hands no image in (they are done without waiting, and captioned from the
queue afterwards), and one handed in meanwhile waits. Then it takes what is waiting, up to
`batch_size`, at once: a lone photo is captioned alone, now. It waits for company (at most
`batch_wait_ms`) only while more images are on their way (`incoming`, being prepared by the
pipeline), and runs one model call for them; the model runs at the size of the batch. Every
image gets exactly one outcome through `finish` (a caption, or an error when the model is
unavailable or fails on that batch), or, when the worker stops first (even in the middle of
its batch), goes back through `hand_back`, never both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from daemon.captions.captioner import Captioner
from daemon.captions.errors import NO_WORDS, CaptionCancelled, CaptionerUnavailable
from models.caption_batches import CaptionBatches

log = logging.getLogger("htx.caption")

# Images waiting for the model are held in memory (384x384 RGB: ~0.4 MB each). Past this many,
# `submit` blocks the pipeline worker: a burst of ten thousand files must not hold gigabytes.
MIN_CAPACITY = 64
# How often a batch waiting for company looks whether any is still on its way.
INCOMING_POLL_S = 0.02


def is_loading(status: str | None) -> bool:
    """Whether a caption status says the model is not ready yet (loading, or being prepared)."""
    return status is not None and status.startswith(("loading", "preparing"))


@dataclass(frozen=True)
class CaptionOutcome:
    caption: str | None
    error: str | None
    caption_ms: float | None  # the batch's model time divided among its images


@dataclass
class _Waiting:
    image: Image.Image
    payload: Any


class CaptionWorker:
    def __init__(
        self,
        captioner: Captioner,
        *,
        batch_size: int,
        batch_wait_ms: int,
        finish: Callable[[Any, CaptionOutcome], None],
        hand_back: Callable[[Any], None],
        on_status: Callable[[str], None] = lambda status: None,
        incoming: Callable[[], int] = lambda: 0,
    ) -> None:
        self.captioner = captioner
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.capacity = max(MIN_CAPACITY, 4 * batch_size)
        self._finish = finish
        self._hand_back = hand_back
        self._on_status = on_status
        self._incoming = incoming
        self._status = "loading"
        self._unavailable: str | None = None  # the reason every caption fails, once known
        self.batches = CaptionBatches()  # sizes and durations of the model calls, for /metrics
        self._waiting: deque[_Waiting] = deque()
        self._stopping = False
        self._cancel = threading.Event()  # stops the model call in hand (at its next token)
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="htx-captioner", daemon=True)

    @property
    def status(self) -> str:
        """"loading", "preparing: <what> (first start, about N s)", "ready (cpu, bfloat16)", or
        "unavailable: <reason>"."""
        return self._status

    @property
    def ready(self) -> bool:
        """Whether an image handed in now is captioned (or told why it cannot be) without
        waiting for the model to load."""
        return not is_loading(self._status)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the thread runs (after `stop`: only a model load that was not waited for)."""
        return self._thread.is_alive()

    def submit(self, image: Image.Image, payload: Any) -> bool:
        """Queue one image (blocks while `capacity` images wait); False once stopping."""
        with self._changed:
            while len(self._waiting) >= self.capacity and not self._stopping:
                self._changed.wait()
            if self._stopping:
                return False
            self._waiting.append(_Waiting(image, payload))
            self._changed.notify_all()
            return True

    def ready_for(self, count: int) -> bool:
        """Whether `count` more images would wait no longer than the next two batches: images
        are claimed from the queue no sooner than the model will take them (while it loads,
        other processes' caption workers may)."""
        with self._changed:
            return not self._stopping and self.ready and len(self._waiting) + count <= 2 * self.batch_size

    def stop(self) -> None:
        """Cut the batch in hand short and hand it back, with every image still waiting.

        A batch takes seconds on CPU (and a large model many more): finishing it could outlast
        the ten seconds a service gets to stop, so it is done again at the next start instead.
        A model still loading is not waited for (loading can take a minute): the thread is a
        daemon thread and, once loaded, sees the stop and exits without touching anything.
        """
        with self._changed:
            self._stopping = True
            self._cancel.set()
            loading = is_loading(self._status)
            self._changed.notify_all()
        if not loading and self._thread.is_alive():
            self._thread.join()
        with self._changed:
            left = list(self._waiting)
            self._waiting.clear()
        self._hand_back_all(left)

    def _hand_back_all(self, items: list[_Waiting]) -> None:
        for item in items:
            try:
                self._hand_back(item.payload)
            except Exception:
                log.exception("could not hand back an image")

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        self._load()
        while (batch := self._next_batch()) is not None:
            self._caption(batch)

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            self.captioner.load(progress=self._preparing)
        except CaptionerUnavailable as error:
            if self._set_status(f"unavailable: {error.reason}", unavailable=error.reason):
                log.error("%s. Until then images are done without a caption (afterwards: htx recaption --missing)", error)
            return
        except Exception as error:  # a broken install or a bug: still never the daemon's end
            reason = f"caption model {self.captioner.model_name} could not be loaded ({type(error).__name__})"
            if self._set_status(f"unavailable: {reason}", unavailable=reason):
                log.exception("caption model %s could not be loaded", self.captioner.model_name)
            return
        if self._set_status(f"ready ({self.captioner.settings})"):
            log.info(
                "caption model %s ready (%s) in %.1f s",
                self.captioner.model_name,
                self.captioner.settings,
                time.perf_counter() - started,
            )

    def _preparing(self, what: str) -> None:
        """The captioner's progress while it prepares the model (a first start's compilation)."""
        self._set_status(f"preparing: {what}")

    def _set_status(self, status: str, *, unavailable: str | None = None) -> bool:
        """Record the outcome of loading; False if stopped meanwhile (then nothing is touched)."""
        with self._changed:
            if self._stopping:
                return False  # stop() has handed everything back and the daemon is going away
            self._status, self._unavailable = status, unavailable
            self._changed.notify_all()
        try:
            self._on_status(status)
        except Exception:
            log.exception("could not record the caption status")
        return True

    def _next_batch(self) -> list[_Waiting] | None:
        """Up to batch_size waiting images; None once stopping (the rest is handed back)."""
        with self._changed:
            while not self._waiting and not self._stopping:
                self._changed.wait()
            if self._unavailable is None:
                # An image in a batch costs less than alone (the decoder reads its weights once
                # per step for the whole batch): wait a moment for the images the pipeline is
                # preparing, but never for company that is not coming.
                deadline = time.monotonic() + self.batch_wait_s
                while len(self._waiting) < self.batch_size and not self._stopping and self._incoming() > 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    # Polled too: an image the pipeline fails leaves `incoming` without a notify.
                    self._changed.wait(min(remaining, INCOMING_POLL_S))
            if self._stopping:
                return None
            batch = [self._waiting.popleft() for _ in range(min(self.batch_size, len(self._waiting)))]
            self._changed.notify_all()  # room for blocked submitters
            return batch

    def _caption(self, batch: list[_Waiting]) -> None:
        if self._unavailable is not None:
            outcomes = [CaptionOutcome(None, self._unavailable, None)] * len(batch)
        else:
            outcomes = self._run_model(batch)
        if outcomes is None:  # cancelled by stop()
            self._hand_back_all(batch)
            return
        for item, outcome in zip(batch, outcomes, strict=True):
            try:
                self._finish(item.payload, outcome)
            except Exception:
                log.exception("could not record a caption")

    def _run_model(self, batch: list[_Waiting]) -> list[CaptionOutcome] | None:
        """One outcome per image; None when stop() cancelled the call."""
        started = time.perf_counter()
        try:
            captions = self.captioner.caption([item.image for item in batch], cancel=self._cancel)
        except CaptionCancelled:
            log.info("stopping: %d image(s) left without a caption go back to pending", len(batch))
            return None
        except Exception as error:
            # One bad batch (out of memory, a model bug) fails only its captions.
            log.exception("caption model failed on a batch of %d image(s)", len(batch))
            reason = f"the caption model failed on this image's batch ({type(error).__name__})"
            return [CaptionOutcome(None, reason, None)] * len(batch)
        elapsed_s = time.perf_counter() - started
        self.batches.record(len(batch), elapsed_s)
        caption_ms = elapsed_s * 1000 / len(batch)
        return [
            CaptionOutcome(text, None, caption_ms) if text else CaptionOutcome(None, NO_WORDS, caption_ms)
            for text in captions
        ]
