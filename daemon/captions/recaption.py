"""`htx recaption`: caption stored images again, e.g. once the model can be loaded.

A one-off process beside the daemon (which may be running): it loads the model itself, decodes
each stored original once, reduced to the model's input exactly as the daemon does, and writes
through its own DatabaseWriter; SQLite's busy timeout lets the two writers take turns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from daemon.database import records
from daemon.captions.captioner import Captioner
from daemon.captions.errors import NO_WORDS
from daemon.stages.decode import configure_pillow, decode
from daemon.errors import PipelineError
from daemon.stages.metadata import extract_metadata
from daemon.stages.pipeline import caption_image, decode_box
from daemon.database.writer import DatabaseWriter
from models.config import Config
from models.store import Store, local_copy
from models.stores import open_store

log = logging.getLogger("htx.recaption")


@dataclass
class RecaptionResult:
    captioned: int = 0
    failed: list[int] = field(default_factory=list)  # ids that could not be captioned
    not_found: list[int] = field(default_factory=list)  # ids asked for that are not done images


def caption_input(config: Config, path: Path, size_bytes: int, edge: int) -> Image.Image:
    """The original in the file `path`, decoded once and reduced to the model's input, upright, RGB."""
    decoded = decode(path, max_pixels=config.pipeline.max_pixels, box=decode_box(config, edge))
    try:
        orientation = extract_metadata(decoded, size_bytes).orientation
        return caption_image(decoded.image, orientation, edge)
    finally:
        decoded.close()


def recaption(
    config: Config, captioner: Captioner, writer: DatabaseWriter, *, missing: bool, ids: Sequence[int] = ()
) -> RecaptionResult:
    """Caption the chosen done images with a loaded `captioner`, one batch at a time."""
    configure_pillow(config.pipeline.max_pixels)
    chosen = writer.call(records.images_to_recaption, missing=missing, ids=ids)
    result = RecaptionResult(not_found=sorted(set(ids) - {stored.id for stored in chosen}))
    size = config.caption.batch_size
    store = open_store(config)
    for start in range(0, len(chosen), size):
        _caption_batch(config, store, captioner, writer, chosen[start : start + size], result)
    return result


def _caption_batch(
    config: Config,
    store: Store,
    captioner: Captioner,
    writer: DatabaseWriter,
    batch: list[records.StoredImage],
    result: RecaptionResult,
) -> None:
    ready: list[tuple[records.StoredImage, Image.Image]] = []
    for stored in batch:
        try:
            with local_copy(store, stored.stored_path, config.work_dir) as path:
                ready.append((stored, caption_input(config, path, stored.size_bytes, captioner.input_size or 0)))
        except (PipelineError, OSError) as error:
            detail = error.message if isinstance(error, PipelineError) else error.strerror or type(error).__name__
            log.warning("image %d %s: cannot read its original: %s", stored.id, stored.filename, detail)
            result.failed.append(stored.id)
    if not ready:
        return
    started = time.perf_counter()
    try:
        captions = captioner.caption([image for _, image in ready])
    except Exception:
        log.exception("caption model failed on a batch of %d image(s)", len(ready))
        result.failed.extend(stored.id for stored, _ in ready)
        return
    caption_ms = (time.perf_counter() - started) * 1000 / len(ready)
    for (stored, _), caption in zip(ready, captions, strict=True):
        values = records.caption_values(
            caption or None,
            error=None if caption else NO_WORDS,
            caption_ms=caption_ms,
            model=captioner.model_name,
            device=captioner.device,
            runtime=captioner.runtime,
        )
        writer.call(records.update_image, stored.id, values)
        if caption:
            result.captioned += 1
            log.info("image %d %s: %s", stored.id, stored.filename, caption)
        else:
            result.failed.append(stored.id)
