"""HEIF, WebP and AVIF files made at test time by the libraries HTX decodes them with, like a
phone's: a portrait photo stored sideways with EXIF orientation 6, a camera, a capture time
and an ICC profile; plus broken copies of them.

Stored 120 x 180 with a red square in its top left corner; shown upright (turned 90 degrees
clockwise) it is 180 x 120 with the square in the top right corner.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import ExifTags, Image

from tests.helpers import CORPUS_DIR

STORED_SIZE = (120, 180)
UPRIGHT_SIZE = (180, 120)
RED = (220, 20, 20)
GREEN = (30, 160, 30)
CAMERA = ("PhoneMaker", "Phone 15")
TAKEN_AT = "2024-05-06T07:08:09"
# The ICC profile of a corpus JPEG ("sRGB IEC61966-2.1"), as phones embed theirs.
ICC_SOURCE = CORPUS_DIR / "pil_sample_rgb.jpg"
ICC_NAME = "sRGB IEC61966-2.1"
# Pillow writes WebP and AVIF; pillow_heif's plugin writes HEIF.
WRITERS = {"HEIF": "heic", "WEBP": "webp", "AVIF": "avif"}


def _icc_profile() -> bytes:
    with Image.open(ICC_SOURCE) as image:
        return image.info["icc_profile"]


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = CAMERA
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = TAKEN_AT.replace("-", ":").replace("T", " ")
    return exif.tobytes()


def photo(*, alpha: bool = False) -> Image.Image:
    """The stored pixels: green, a red square top left; with `alpha`, a transparent bottom half."""
    image = Image.new("RGBA" if alpha else "RGB", STORED_SIZE, GREEN)
    image.paste(RED, (0, 0, 40, 40))
    if alpha:
        image.paste((0, 0, 0, 0), (0, STORED_SIZE[1] // 2, *STORED_SIZE))
    return image


def write_sample(
    folder: Path, image_format: str, *, name: str | None = None, orientation: int = 6, alpha: bool = False
) -> Path:
    """`photo()` saved in `image_format` ("HEIF", "WEBP", "AVIF") with its EXIF and ICC profile."""
    if image_format == "HEIF":
        import pillow_heif  # the writer only: decoding registers it in daemon.stages.decode

        pillow_heif.register_heif_opener()
    path = folder / (name or f"phone.{WRITERS[image_format]}")
    photo(alpha=alpha).save(path, format=image_format, quality=90, exif=_exif(orientation), icc_profile=_icc_profile())
    return path


def truncated(source: Path, destination: Path) -> Path:
    """The first half of `source`'s bytes: a download cut short."""
    data = source.read_bytes()
    destination.write_bytes(data[: len(data) // 2])
    return destination


def garbage_after_magic(source: Path, destination: Path) -> Path:
    """`source`'s first 32 bytes (its magic, and for HEIF and AVIF the brands), then noise."""
    noise = random.Random(destination.name).randbytes(4000)
    destination.write_bytes(source.read_bytes()[:32] + noise)
    return destination
