"""Validate a file by its bytes and decode it once, at the smallest scale the later stages need."""

from __future__ import annotations

import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from daemon.errors import CorruptImage, TooLarge, UnsupportedFormat

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SNIFF_BYTES = 32
# File name extension of each accepted format (what `sniff_format` names).
EXTENSIONS = {"JPEG": "jpg", "PNG": "png"}

# Magic numbers of formats people commonly drop by mistake, to name them in the error.
_OTHER_FORMATS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"BM", "BMP"),
    (0, b"%PDF", "PDF"),
    (0, b"8BPS", "PSD"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"qoif", "QOI"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def sniff_format(head: bytes) -> str:
    """Name the format of a file from its first bytes: "JPEG", "PNG", or another format's name.

    Raises CorruptImage for an empty file or a PNG whose signature was damaged in transfer,
    UnsupportedFormat for anything that is not JPEG or PNG.
    """
    if not head:
        raise CorruptImage("the file is empty")
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(PNG_SIGNATURE):
        return "PNG"
    if b"IHDR" in head[:24] or head[1:4].upper() == b"PNG":
        # A PNG mangled by a text-mode transfer or a bad disk: say so rather than "unknown".
        raise CorruptImage("damaged PNG signature")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise UnsupportedFormat("WebP")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            raise UnsupportedFormat("AVIF")
        if brand in _HEIF_BRANDS:
            raise UnsupportedFormat("HEIF")
    for offset, magic, name in _OTHER_FORMATS:
        if head[offset:].startswith(magic):
            raise UnsupportedFormat(name)
    if _looks_like_text(head):
        raise UnsupportedFormat("text")
    raise UnsupportedFormat("unknown")


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(char.isprintable() or char in "\t\r\n" for char in text)


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
    """A file opened, checked and decoded once; `image` may be reduced by JPEG draft mode."""

    image: Image.Image
    format: str  # "JPEG" or "PNG", by the bytes (an MPO is a JPEG)
    width: int  # of the original, before any reduction
    height: int
    mode: str  # of the original, as Pillow reports it
    info: dict

    def __enter__(self) -> DecodedImage:
        return self

    def __exit__(self, *_exc: object) -> None:
        # Multi-frame files (MPO, APNG) keep their file open until closed.
        self.image.close()


# Pillow puts the file name into some messages; never let a server path reach a record.
_QUOTED_PATH = re.compile(r"""['"]?(?:/|[A-Za-z]:\\)[^'"\s]*['"]?""")


def _describe(error: BaseException) -> str:
    text = _QUOTED_PATH.sub("", str(error)).strip(" :")
    return text or type(error).__name__


def decode(path: Path, *, max_pixels: int, box: int) -> DecodedImage:
    """Open `path` as JPEG or PNG, check its pixel count, and decode it.

    Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale (Pillow's `draft`), still at least `box`
    pixels on each side, which is all the thumbnails and the caption model need.
    """
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    sniffed = sniff_format(head)
    try:
        image = Image.open(path, formats=("JPEG", "PNG"))
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
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, zlib.error, EOFError, IndexError) as error:
        image.close()
        raise CorruptImage(_describe(error)) from error
    return DecodedImage(image=image, format=sniffed, width=width, height=height, mode=mode, info=info)


def _bomb_detail(error: BaseException, max_pixels: int) -> str:
    match = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(match.group(1)):,} pixels" if match else "the image's pixel count"
    return f"{pixels} is over the limit of {max_pixels:,} (pipeline.max_pixels)"
