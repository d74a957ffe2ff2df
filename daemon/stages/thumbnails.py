"""Thumbnails: fit the box, upright, sRGB, stripped of metadata, transparency kept.

A decoded image can be hundreds of megabytes (a 9400 x 9400 RGBA PNG is 353 MB); `shrink` makes
the small images from it without a second full-size copy (issue 10).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageCms

from models.config import ThumbnailsConfig
from models.store import Store, thumbnail_key

_SRGB = ImageCms.createProfile("sRGB")

# EXIF orientation -> the operations that make the image upright.
_UPRIGHT: dict[int, tuple[Image.Transpose, ...]] = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}

# Resizing first reduces by a whole factor (box averages), then resamples the last part of at
# most this ratio: as good as a full resample (Pillow's `reducing_gap`), far cheaper.
REDUCING_GAP = 3.0
# `shrink` converts and reduces a large image this many bytes of rows at a time.
STRIP_BYTES = 4 * 1024 * 1024
# Pillow resizes images with alpha in premultiplied form, so colours of transparent pixels do
# not bleed into their neighbours.
_PREMULTIPLIED = {"RGBA": "RGBa", "LA": "La"}


@dataclass(frozen=True)
class Thumbnail:
    size_name: str  # "small" or "medium"
    path: str  # its key in the store (models.store)
    width: int
    height: int


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation (1..8) to the pixels."""
    for operation in _UPRIGHT.get(orientation, ()):
        image = image.transpose(operation)
    return image


def resizable(image: Image.Image) -> Image.Image:
    """Convert modes that Pillow cannot resize smoothly (palette, 1-bit, 16/32-bit grey)."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "PA":
        return image.convert("RGBA")
    if image.mode in ("1", "F") or image.mode.startswith("I"):
        return image.convert("L")  # 16-bit and 32-bit grey are scaled to 8 bits
    return image


def to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert to sRGB RGB / RGBA / L / LA, using the embedded ICC profile where there is one."""
    if icc and image.mode in ("RGB", "RGBA", "CMYK"):
        converted = _apply_profile(image, icc)
        if converted is not None:
            return converted
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGB")
    return image


def _apply_profile(image: Image.Image, icc: bytes) -> Image.Image | None:
    output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode=output_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None  # an unusable profile: keep the pixels as they are rather than fail


def has_transparency(image: Image.Image) -> bool:
    """True when some pixel is not fully opaque (an alpha channel of all 255 is dropped)."""
    if image.mode not in ("RGBA", "LA"):
        return False
    low, _high = image.getchannel("A").getextrema()
    return low < 255


def fitted_size(width: int, height: int, edge: int) -> tuple[int, int]:
    """The size of width x height fitted into edge x edge, aspect kept, never enlarged."""
    scale = min(1.0, edge / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


def _unchanged(image: Image.Image) -> Image.Image:
    return image


def shrink(
    image: Image.Image,
    size: tuple[int, int],
    resample: Image.Resampling,
    convert: Callable[[Image.Image], Image.Image] = _unchanged,
) -> Image.Image:
    """`convert(image).resize(size, resample, reducing_gap=REDUCING_GAP)`, pixel for pixel, but
    with no full-size copy of `image` beside it; always a new image.

    `convert` changes the mode pixel by pixel (as `resizable` does), so it may be applied to
    parts. Pillow would convert the whole image, then convert that whole to premultiplied
    alpha: two more full-size copies of a 353 MB image. Here rows are cropped, converted and
    reduced a strip at a time into the reduced image, and only that is resampled.
    `resample` is a smoothing filter (LANCZOS, BICUBIC), not NEAREST.
    """
    width, height = image.size
    if image.size == size:
        converted = convert(image)
        return image.copy() if converted is image else converted
    probe = image.crop((0, 0, width, 1))
    converted = convert(probe)
    working_mode = _PREMULTIPLIED.get(converted.mode, converted.mode)
    if converted is probe and working_mode == image.mode:
        # Nothing to convert: Pillow's own two-step resize holds only the reduced copy.
        return image.resize(size, resample, reducing_gap=REDUCING_GAP)
    factor_x, factor_y = reduce_factors(image.size, size)
    rows = strip_rows(image.size, factor_y)
    reduced = Image.new(working_mode, (math.ceil(width / factor_x), math.ceil(height / factor_y)))
    for top in range(0, height, rows):
        strip = convert(image.crop((0, top, width, min(top + rows, height))))
        if strip.mode != working_mode:
            strip = strip.convert(working_mode)
        if factor_x > 1 or factor_y > 1:
            strip = strip.reduce((factor_x, factor_y))
        reduced.paste(strip, (0, top // factor_y))
        del strip
    # As Pillow resamples after its own reduce: the reduced image's edge pixels cover a partial
    # block, so the box is the original extent in reduced units.
    resized = reduced.resize(size, resample, box=(0, 0, width / factor_x, height / factor_y))
    return resized.convert(converted.mode) if resized.mode != converted.mode else resized


def reduce_factors(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The whole factors by which Pillow's resize reduces `image_size` before resampling to `size`."""
    return (
        int(image_size[0] / size[0] / REDUCING_GAP) or 1,
        int(image_size[1] / size[1] / REDUCING_GAP) or 1,
    )


def strip_rows(image_size: tuple[int, int], factor_y: int) -> int:
    """Rows per strip: about STRIP_BYTES of 4-byte pixels, a whole number of reduced rows, so
    that every strip reduces exactly as that part of the whole image would."""
    per_row = max(1, image_size[0] * 4)
    return max(1, STRIP_BYTES // per_row // factor_y) * factor_y


def shrink_bytes(image_size: tuple[int, int], size: tuple[int, int]) -> int:
    """An upper bound on the memory `shrink` holds beside the image: the reduced image and a
    strip in its three forms (cropped, converted, premultiplied)."""
    factor_x, factor_y = reduce_factors(image_size, size)
    reduced = math.ceil(image_size[0] / factor_x) * math.ceil(image_size[1] / factor_y) * 4
    strip = min(strip_rows(image_size, factor_y), image_size[1]) * image_size[0] * 4
    return reduced + 3 * strip + size[0] * size[1] * 4


@dataclass
class ThumbnailImages:
    """Both thumbnails in memory, ready to write."""

    medium: Image.Image
    small: Image.Image
    file_format: str  # "JPEG", "PNG" or "WEBP"


def make_thumbnails(
    image: Image.Image,
    *,
    orientation: int,
    icc: bytes | None,
    sha256: str,
    config: ThumbnailsConfig,
    store: Store,
) -> list[Thumbnail]:
    """Write the medium and small thumbnails of a decoded image; return what was written."""
    rendered = render_thumbnails(image, orientation=orientation, icc=icc, config=config)
    return write_thumbnails(rendered, sha256=sha256, quality=config.quality, store=store)


def render_thumbnails(
    image: Image.Image, *, orientation: int, icc: bytes | None, config: ThumbnailsConfig
) -> ThumbnailImages:
    """The medium and small thumbnails of a decoded image, in memory; `image` may be closed after.

    The work is done on the medium-size image: it is resized first, then colour-converted and
    turned upright, which costs the same result for a fraction of the pixels.
    """
    medium = shrink(image, fitted_size(*image.size, config.medium), Image.Resampling.LANCZOS, resizable)
    medium = upright(to_srgb(medium, icc), orientation)
    if has_transparency(medium):
        file_format = "PNG" if config.format == "jpeg" else config.format.upper()
    else:
        file_format = config.format.upper()
        if medium.mode in ("RGBA", "LA"):
            medium = medium.convert(medium.mode[:-1])
    # From the medium image (cheaper), at the size the whole image fits to (no rounding drift).
    turned = orientation in (5, 6, 7, 8)
    width, height = (image.height, image.width) if turned else image.size
    small = fit(medium, fitted_size(width, height, config.small))
    return ThumbnailImages(medium=medium, small=small, file_format=file_format)


def write_thumbnails(rendered: ThumbnailImages, *, sha256: str, quality: int, store: Store) -> list[Thumbnail]:
    return [
        _write(rendered.medium, "medium", rendered.file_format, sha256, quality, store),
        _write(rendered.small, "small", rendered.file_format, sha256, quality, store),
    ]


def _write(image: Image.Image, size_name: str, file_format: str, sha256: str, quality: int, store: Store) -> Thumbnail:
    key = thumbnail_key(sha256, size_name, _EXTENSIONS[file_format])
    options: dict = {"quality": quality} if file_format in ("JPEG", "WEBP") else {"compress_level": 6}
    if file_format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    store.write(key, lambda handle: image.save(handle, file_format, **options))
    return Thumbnail(size_name=size_name, path=key, width=image.width, height=image.height)
