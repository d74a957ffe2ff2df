"""Thumbnails: fit the box, upright, sRGB, stripped of metadata, transparency kept."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageCms

from daemon.files import write_atomically
from models.config import ThumbnailsConfig

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


@dataclass(frozen=True)
class Thumbnail:
    size_name: str  # "small" or "medium"
    path: str  # relative to the data folder
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
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def make_thumbnails(
    image: Image.Image,
    *,
    orientation: int,
    icc: bytes | None,
    sha256: str,
    config: ThumbnailsConfig,
    data_dir: Path,
) -> list[Thumbnail]:
    """Write the medium and small thumbnails of a decoded image; return what was written.

    The work is done on the medium-size image: it is resized first, then colour-converted and
    turned upright, which costs the same result for a fraction of the pixels.
    """
    medium = fit(resizable(image), fitted_size(*image.size, config.medium))
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
    return [
        _write(medium, "medium", file_format, sha256, config.quality, data_dir),
        _write(small, "small", file_format, sha256, config.quality, data_dir),
    ]


def thumbnail_relpath(sha256: str, size_name: str, file_format: str) -> str:
    return f"thumbnails/{sha256[:2]}/{sha256}-{size_name}.{_EXTENSIONS[file_format]}"


def _write(
    image: Image.Image, size_name: str, file_format: str, sha256: str, quality: int, data_dir: Path
) -> Thumbnail:
    relpath = thumbnail_relpath(sha256, size_name, file_format)
    options: dict = {"quality": quality} if file_format in ("JPEG", "WEBP") else {"compress_level": 6}
    if file_format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    write_atomically(data_dir / relpath, lambda handle: image.save(handle, file_format, **options))
    return Thumbnail(size_name=size_name, path=relpath, width=image.width, height=image.height)
