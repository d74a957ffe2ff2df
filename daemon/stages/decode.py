"""Validate a file by its bytes and decode it once, at the smallest scale the later stages need."""

from __future__ import annotations

import re
import threading
import warnings
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from daemon.errors import CorruptImage, NotRegularFile, SourceChanged, TooLarge
from models.files import open_regular
from models.formats import DEFAULT_ACCEPTED, DISPLAY_NAMES, EXTENSIONS, FORMATS, SNIFF_BYTES, sniff_format

# Sniffing lives in models.formats, since the API sniffs uploads too; it is named here as well so
# that the daemon's modules keep importing it from daemon.stages.decode.
__all__ = [
    "EXTENSIONS",
    "READABLE",
    "SNIFF_BYTES",
    "DecodedImage",
    "configure_pillow",
    "decode",
    "open_image",
    "pixel_bytes",
    "register_heif",
    "sniff_format",
]

# Every format HTX can decode: what a stored original, accepted once, may be in.
READABLE = frozenset(FORMATS.values())
# What the decoders raise for bytes they cannot decode (the C decoders of WebP, AVIF and HEIF
# raise RuntimeError as well).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, RuntimeError, zlib.error, EOFError)


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
    format: str  # "JPEG", "PNG", "HEIF", "WEBP" or "AVIF", by the bytes (an MPO is a JPEG)
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

    @property
    def decode_bytes(self) -> int:
        """Memory `load` takes at its peak: the pixels, and the decoder's own copies of them."""
        return self.pixel_bytes * _DECODER_MEMORY.get(self.format, (1, 1))[0]

    @property
    def held_bytes(self) -> int:
        """Memory held from `load` to `close`: the pixels, and what the decoder keeps of its copies."""
        return self.pixel_bytes * _DECODER_MEMORY.get(self.format, (1, 1))[1]

    def load(self) -> None:
        """Decode the pixels; CorruptImage (and the file closed) if they cannot be."""
        try:
            self.image.load()
        except (*_DECODE_ERRORS, IndexError) as error:
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
# JPEG and PNG decode straight into Pillow's image. The others decode the whole image into the
# library's buffers, which Pillow then copies: WebP's decoder holds a canvas and a copy of it,
# AVIF's and HEIF's their YUV planes and an RGB copy; WebP's and AVIF's keep theirs until the
# image is closed. In units of the pixels, the peak during `load` and what is held after it,
# measured on 4000 x 3000 and 3000 x 2000 photos: WebP 4.0 and 3.0, AVIF 2.4 and 1.6, HEIF 2.2
# and 1.2 (HEIF's copies are freed as `load` ends); rounded, as 4:4:4 and 10-bit take more.
_DECODER_MEMORY = {"WEBP": (4, 3), "AVIF": (3, 2), "HEIF": (3, 1)}


# Pillow puts the file name into some messages; never let a server path reach a record.
_QUOTED_PATH = re.compile(r"""['"]?(?:/|[A-Za-z]:\\)[^'"\s]*['"]?""")


def _describe(error: BaseException) -> str:
    text = _QUOTED_PATH.sub("", str(error)).strip(" :")
    return text or type(error).__name__


def decode(path: Path, *, max_pixels: int, box: int, formats: Collection[str] = READABLE) -> DecodedImage:
    """`open_image` and `load` in one: the file checked and decoded.

    For stored originals (`htx recaption`, the caption stage), which were accepted when they
    came in: any format HTX reads, whatever `pipeline.formats` says now.
    """
    opened = open_image(path, max_pixels=max_pixels, box=box, formats=formats)
    opened.load()
    return opened


def open_image(
    path: Path, *, max_pixels: int, box: int, formats: Collection[str] = DEFAULT_ACCEPTED
) -> DecodedImage:
    """Open `path` as one of `formats` (by its bytes) and check its pixel count, reading only
    the header; any other format is UnsupportedFormat.

    Large JPEGs are set to decode at 1/2, 1/4 or 1/8 scale (Pillow's `draft`), still at least
    `box` pixels on each side, which is all the thumbnails and the caption model need; the
    returned image's size is already the reduced one, so the memory a decode will take is known
    before it starts (`DecodedImage.decode_bytes`). Nothing is decoded until `load`. HEIF, WebP
    and AVIF decode at full size (their libraries have no reduced decode), and their libraries
    read the whole file into memory here, which pipeline.max_file_bytes bounds.
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
        return _open_checked(handle, max_pixels=max_pixels, box=box, formats=formats)
    except BaseException:
        handle.close()
        raise


def _open_checked(handle: BinaryIO, *, max_pixels: int, box: int, formats: Collection[str]) -> DecodedImage:
    head = handle.read(SNIFF_BYTES)
    handle.seek(0)
    sniffed = sniff_format(head, formats)
    if sniffed == "HEIF":
        register_heif()
    try:
        # Only the plugin of the sniffed format may read the bytes. Pillow checks the pixel
        # count (`configure_pillow`) of every format, HEIF's plugin included, right here.
        image = Image.open(handle, formats=(sniffed,))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise TooLarge(_bomb_detail(error, max_pixels)) from error
    except UnidentifiedImageError as error:
        raise CorruptImage(f"not a readable {DISPLAY_NAMES[sniffed]} file (damaged header)") from error
    except _DECODE_ERRORS as error:
        detail = _describe(error)
        if sniffed in _DECODER_MEMORY:
            # The decoder library's words alone ("could not create decoder object") say little.
            detail = f"not a readable {DISPLAY_NAMES[sniffed]} file ({detail})"
        raise CorruptImage(detail) from error

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


_heif_lock = threading.Lock()
_heif_registered = False


def register_heif() -> None:
    """Teach Pillow HEIF (pillow_heif's plugin), once, on the first HEIF file: a daemon that
    never sees one never loads libheif.

    Opened through Pillow like any format, HEIF gets the same pixel-count guard. libheif turns
    the image as its container says (irot, imir) and the plugin sets the EXIF orientation to 1,
    so the pixels are upright already and never turned twice. Thumbnails, depth and auxiliary
    images embedded in the file are not read: only the main image is used.
    """
    global _heif_registered
    with _heif_lock:
        if not _heif_registered:
            import pillow_heif  # noqa: PLC0415 - put off until a HEIF file comes

            pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
            _heif_registered = True
