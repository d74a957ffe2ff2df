"""Validate a file by its bytes and decode it once, at the smallest scale the later stages need."""

from __future__ import annotations

import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from daemon.errors import CorruptImage, NotRegularFile, SourceChanged, TooLarge
from models.files import open_regular
from models.formats import EXTENSIONS, SNIFF_BYTES, sniff_format

# Sniffing lives in models.formats, since the API sniffs uploads too; it is named here as well so
# that the daemon's modules keep importing it from daemon.stages.decode.
__all__ = [
    "EXTENSIONS",
    "SNIFF_BYTES",
    "DecodedImage",
    "configure_pillow",
    "decode",
    "open_image",
    "pixel_bytes",
    "sniff_format",
]


def configure_pillow(max_pixels: int) -> None:
    """Make Pillow's own decompression-bomb guard agree with `pipeline.max_pixels`.

    Pillow checks the pixel count inside `Image.open`, before our code sees the size; its
    warning is turned into an error so a bomb is never decoded, whatever the threshold.
    Process-wide settings, so the daemon calls this once at start.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


@dataclass
class DecodedImage:
    """A file opened and checked by `open_image`, its pixels decoded by `load` (once).

    `image` may be reduced by JPEG draft mode: its size is what `load` decodes.
    """

    image: Image.Image
    format: str  # "JPEG" or "PNG", by the bytes (an MPO is a JPEG)
    width: int  # of the original, before any reduction
    height: int
    mode: str  # of the original, as Pillow reports it
    info: dict
    # The file, opened by the daemon (Pillow does not close what it did not open).
    handle: BinaryIO | None = None

    @property
    def pixel_bytes(self) -> int:
        """Memory the decoded pixels take (known from the header, before `load`)."""
        return pixel_bytes(self.image.size, self.image.mode)

    def load(self) -> None:
        """Decode the pixels; CorruptImage (and the file closed) if they cannot be."""
        try:
            self.image.load()
        except (OSError, ValueError, SyntaxError, zlib.error, EOFError, IndexError) as error:
            self.close()
            raise CorruptImage(_describe(error)) from error

    def close(self) -> None:
        """Free the pixels (and the file of a multi-frame MPO or APNG, kept open until then)."""
        self.image.close()
        if self.handle is not None:
            self.handle.close()

    def __enter__(self) -> DecodedImage:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def pixel_bytes(size: tuple[int, int], mode: str) -> int:
    """Bytes Pillow allocates for an image: 1 per pixel for 1, L and P, 2 for 16-bit grey, and
    4 for every other mode (RGB too is stored in 4 bytes a pixel)."""
    width, height = size
    return width * height * _BYTES_PER_PIXEL.get(mode, 4)


_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


# Pillow puts the file name into some messages; never let a server path reach a record.
_QUOTED_PATH = re.compile(r"""['"]?(?:/|[A-Za-z]:\\)[^'"\s]*['"]?""")


def _describe(error: BaseException) -> str:
    text = _QUOTED_PATH.sub("", str(error)).strip(" :")
    return text or type(error).__name__


def decode(path: Path, *, max_pixels: int, box: int) -> DecodedImage:
    """`open_image` and `load` in one: the file checked and decoded."""
    opened = open_image(path, max_pixels=max_pixels, box=box)
    opened.load()
    return opened


def open_image(path: Path, *, max_pixels: int, box: int) -> DecodedImage:
    """Open `path` as JPEG or PNG and check its pixel count, reading only the header.

    Large JPEGs are set to decode at 1/2, 1/4 or 1/8 scale (Pillow's `draft`), still at least
    `box` pixels on each side, which is all the thumbnails and the caption model need; the
    returned image's size is already the reduced one, so the memory a decode will take is known
    before it starts (`DecodedImage.pixel_bytes`). Nothing is decoded until `load`.
    """
    # Opened as the hash was: never through a symlink, never anything but a regular file (one
    # swapped in since the hash is no longer the bytes that were hashed).
    try:
        handle = open_regular(path)
    except NotRegularFile:
        raise SourceChanged() from None
    except PermissionError:
        raise SourceChanged() from None
    try:
        return _open_checked(handle, max_pixels=max_pixels, box=box)
    except BaseException:
        handle.close()
        raise


def _open_checked(handle: BinaryIO, *, max_pixels: int, box: int) -> DecodedImage:
    head = handle.read(SNIFF_BYTES)
    handle.seek(0)
    sniffed = sniff_format(head)
    try:
        image = Image.open(handle, formats=("JPEG", "PNG"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise TooLarge(_bomb_detail(error, max_pixels)) from error
    except UnidentifiedImageError as error:
        raise CorruptImage(f"not a readable {sniffed} file (damaged header)") from error
    except (OSError, ValueError, SyntaxError, zlib.error, EOFError) as error:
        raise CorruptImage(_describe(error)) from error

    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise TooLarge(f"{width}x{height} pixels is over the limit of {max_pixels:,} (pipeline.max_pixels)")
    mode = image.mode
    info = dict(image.info)
    if sniffed == "JPEG":
        image.draft(None, (box, box))
    return DecodedImage(image=image, format=sniffed, width=width, height=height, mode=mode, info=info, handle=handle)


def _bomb_detail(error: BaseException, max_pixels: int) -> str:
    match = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(match.group(1)):,} pixels" if match else "the image's pixel count"
    return f"{pixels} is over the limit of {max_pixels:,} (pipeline.max_pixels)"
