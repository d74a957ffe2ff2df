"""The per-image stages after hashing: validate and decode, read metadata, write thumbnails.

Plain functions; the worker runs them and records the outcome. Each stage's time is measured
here so the record says where the time went.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from daemon.decode import decode
from daemon.errors import MissingFile, TooLarge
from daemon.metadata import ImageMetadata, extract_metadata
from daemon.thumbnails import Thumbnail, make_thumbnails, resizable, upright
from models.config import Config


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


def prepare(
    source: Path, *, sha256: str, size_bytes: int, config: Config, caption_size: int | None
) -> PreparedImage:
    """Validate, decode once, read metadata and write both thumbnails for one file.

    Raises a PipelineError for a file that cannot become a record.
    """
    check_file_size(size_bytes, config.pipeline.max_file_bytes)
    started = time.perf_counter()
    try:
        decoded = decode(source, max_pixels=config.pipeline.max_pixels, box=decode_box(config, caption_size))
    except FileNotFoundError:
        raise MissingFile() from None
    with decoded:
        metadata = extract_metadata(decoded, size_bytes)
        decoded_at = time.perf_counter()
        thumbnails = make_thumbnails(
            decoded.image,
            orientation=metadata.orientation,
            icc=decoded.info.get("icc_profile"),
            sha256=sha256,
            config=config.thumbnails,
            data_dir=config.data_dir,
        )
        thumbnails_at = time.perf_counter()
        caption_input = None
        if caption_size:
            caption_input = caption_image(decoded.image, metadata.orientation, caption_size)
    return PreparedImage(
        metadata=metadata,
        thumbnails=thumbnails,
        timings_ms={
            "metadata": (decoded_at - started) * 1000,
            "thumbnails": (thumbnails_at - decoded_at) * 1000,
        },
        caption_input=caption_input,
    )


def caption_image(image: Image.Image, orientation: int, edge: int) -> Image.Image:
    """The decoded image, upright, in RGB, squeezed to edge x edge as captioning models take it."""
    rgb = resizable(image)
    if rgb.mode != "RGB":
        rgb = rgb.convert("RGB")
    return upright(rgb.resize((edge, edge), Image.Resampling.BICUBIC, reducing_gap=3.0), orientation)
