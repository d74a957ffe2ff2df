"""The accepted image formats, told by a file's first bytes.

The daemon sniffs a file before decoding it; the API sniffs an upload as soon as its first
bytes arrive, so that it refuses what the daemon would refuse without waiting for the rest.
"""

from __future__ import annotations

from models.image_errors import CorruptImage, UnsupportedFormat

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
