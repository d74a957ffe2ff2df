"""The per-image stages after hashing: validate and decode, read metadata, write thumbnails.

Plain functions; the worker runs them and records the outcome. Each stage's time is measured
here so the record says where the time went.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from daemon.stages.decode import DecodedImage, open_image
from daemon.errors import MissingFile, TooLarge
from daemon.stages.memory_budget import DecodeBudget
from daemon.stages.metadata import ImageMetadata, extract_metadata
from daemon.stages.thumbnails import (
    Thumbnail,
    fitted_size,
    render_thumbnails,
    resizable,
    shrink,
    shrink_bytes,
    upright,
    write_thumbnails,
)
from models.config import Config
from models.formats import accepted_formats
from models.store import Store


@dataclass
class PreparedImage:
    """Everything but the caption."""

    metadata: ImageMetadata
    thumbnails: list[Thumbnail]
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The pixels the caption model will see (already reduced), or None if no model needs them.
    caption_input: Image.Image | None = None


def check_file_size(size_bytes: int, max_file_bytes: int) -> None:
    if size_bytes > max_file_bytes:
        raise TooLarge(
            f"{size_bytes:,} bytes is over the limit of {max_file_bytes:,} (pipeline.max_file_bytes)"
        )


def decode_box(config: Config, caption_size: int | None) -> int:
    """The smallest edge a decode must keep for the thumbnails and the caption model.

    `htx recaption` decodes with the same box, so a caption made again matches the first one.
    """
    return max(config.thumbnails.medium, caption_size or 0)


def decode_cost(opened: DecodedImage, config: Config, caption_size: int | None) -> int:
    """Bytes `prepare` holds while `opened` is decoded: its pixels (at the JPEG draft scale)
    plus the larger of the working copies that the medium thumbnail and the caption input take
    (they are made one after the other); or, when more, what `load` takes at its peak (WebP,
    AVIF and HEIF decode into copies of their own first, and WebP and AVIF keep some)."""
    size = opened.image.size
    working = shrink_bytes(size, fitted_size(*size, config.thumbnails.medium))
    if caption_size:
        working = max(working, shrink_bytes(size, (caption_size, caption_size)))
    return max(opened.decode_bytes, opened.held_bytes + working)


def prepare(
    source: Path,
    *,
    sha256: str,
    size_bytes: int,
    config: Config,
    store: Store,
    caption_size: int | None,
    budget: DecodeBudget | None = None,
) -> PreparedImage:
    """Validate, decode once, read metadata and write both thumbnails for one file.

    With `budget`, the decode waits until its memory fits (`decode_cost`), and gives it back
    once the decoded image is dropped, before the thumbnails are written.
    Raises a PipelineError for a file that cannot become a record, and DecodeStopped if the
    budget's stop was set while the decode waited for memory.
    """
    check_file_size(size_bytes, config.pipeline.max_file_bytes)
    started = time.perf_counter()
    try:
        opened = open_image(
            source,
            max_pixels=config.pipeline.max_pixels,
            box=decode_box(config, caption_size),
            formats=accepted_formats(config.pipeline.formats),
        )
    except FileNotFoundError:
        raise MissingFile() from None
    with opened:
        waiting = time.perf_counter()
        with budget.reserve(decode_cost(opened, config, caption_size)) if budget else nullcontext():
            waited = time.perf_counter() - waiting
            opened.load()
            metadata = extract_metadata(opened, size_bytes)
            decoded_at = time.perf_counter()
            rendered = render_thumbnails(
                opened.image, orientation=metadata.orientation, icc=opened.info.get("icc_profile"), config=config.thumbnails
            )
            caption_input = None
            if caption_size:
                caption_input = caption_image(opened.image, metadata.orientation, caption_size)
            opened.close()  # only the small images are left: the memory is free for the next decode
    thumbnails = write_thumbnails(rendered, sha256=sha256, quality=config.thumbnails.quality, store=store)
    thumbnails_at = time.perf_counter()
    return PreparedImage(
        metadata=metadata,
        thumbnails=thumbnails,
        timings_ms={
            "metadata": (decoded_at - started - waited) * 1000,
            "thumbnails": (thumbnails_at - decoded_at) * 1000,
            "memory_wait": waited * 1000,
        },
        caption_input=caption_input,
    )


def caption_image(image: Image.Image, orientation: int, edge: int) -> Image.Image:
    """The decoded image, upright, in RGB, squeezed to edge x edge as captioning models take it."""
    return upright(shrink(image, (edge, edge), Image.Resampling.BICUBIC, _rgb), orientation)


def _rgb(image: Image.Image) -> Image.Image:
    image = resizable(image)
    return image if image.mode == "RGB" else image.convert("RGB")
