"""The accepted image formats, told by a file's first bytes.

The daemon sniffs a file before decoding it; the API sniffs an upload as soon as its first
bytes arrive, so that it refuses what the daemon would refuse without waiting for the rest.
JPEG and PNG are always known; HEIF, WebP and AVIF only where `pipeline.formats` names them,
and a file of a format not named is refused as any GIF is.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from models.image_errors import CorruptImage, UnsupportedFormat

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Enough for an ISO-BMFF `ftyp` box's brands (HEIF, AVIF), which can follow the first 32 bytes.
SNIFF_BYTES = 64
# The words `pipeline.formats` takes, each with the name records, `sniff_format` and
# `EXTENSIONS` use (Pillow's name of the format), in the order messages list them.
FORMATS = {"jpeg": "JPEG", "png": "PNG", "heif": "HEIF", "webp": "WEBP", "avif": "AVIF"}
# What the original API promised, and what a configuration without `pipeline.formats` accepts.
DEFAULT_FORMATS = ("jpeg", "png")
DEFAULT_ACCEPTED = frozenset({"JPEG", "PNG"})
# File name extension of each format `sniff_format` names: the stored original's.
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "HEIF": "heic", "WEBP": "webp", "AVIF": "avif"}
# How people write them, in messages.
DISPLAY_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "HEIF": "HEIF", "WEBP": "WebP", "AVIF": "AVIF"}

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
# ISO-BMFF brands: HEVC-coded HEIF images and sequences, the generic image (mif1) and sequence
# (msf1) brands, and AV1-coded AVIF. A generic brand says nothing of the codec: an AVIF
# encoder may write "mif1" first and "avif" among the compatible brands.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_GENERIC_BRANDS = frozenset({b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


class NotAccepted(UnsupportedFormat):
    """An UnsupportedFormat that names the formats this configuration accepts."""

    def __init__(self, format_name: str, accepted: Collection[str]) -> None:
        super().__init__(format_name)
        # The base's words name JPEG and PNG, which is right for the default only.
        verb = "is" if len(set(accepted) & set(DISPLAY_NAMES)) == 1 else "are"
        self.message = f"unsupported format: {format_name} (only {spoken(accepted)} {verb} accepted)"
        self.args = (self.message,)


def accepted_formats(names: Iterable[str]) -> frozenset[str]:
    """The formats `sniff_format` accepts for the words of `pipeline.formats` ("heif" -> "HEIF")."""
    return frozenset(FORMATS[name] for name in names)


def spoken(formats: Collection[str]) -> str:
    """Formats as a person lists them, in a fixed order: "JPEG, PNG and WebP"."""
    names = [DISPLAY_NAMES[name] for name in FORMATS.values() if name in formats]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def sniff_format(head: bytes, accepted: Collection[str] = DEFAULT_ACCEPTED) -> str:
    """Name the format of a file from its first bytes: one of `accepted` ("JPEG", "PNG", and
    where enabled "HEIF", "WEBP", "AVIF").

    Raises CorruptImage for an empty file or a PNG whose signature was damaged in transfer,
    UnsupportedFormat for anything else, a format known here but not accepted included.
    """
    if not head:
        raise CorruptImage("the file is empty")
    if head.startswith(b"\xff\xd8\xff"):
        found = "JPEG"
    elif head.startswith(PNG_SIGNATURE):
        found = "PNG"
    elif b"IHDR" in head[:24] or head[1:4].upper() == b"PNG":
        # A PNG mangled by a text-mode transfer or a bad disk: say so rather than "unknown".
        raise CorruptImage("damaged PNG signature")
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        found = "WEBP"
    else:
        found = _iso_bmff_format(head) or _other_format(head)
    if found not in accepted:
        raise NotAccepted(DISPLAY_NAMES.get(found, found), accepted)
    return found


def _iso_bmff_format(head: bytes) -> str | None:
    """"HEIF" or "AVIF" for a file that opens with an `ftyp` box of their brands, else None."""
    if head[4:8] != b"ftyp":
        return None
    major = head[8:12]
    # The box's size bounds its compatible brands (after the minor version, at 16).
    end = min(int.from_bytes(head[:4], "big"), len(head))
    compatible = {head[offset : offset + 4] for offset in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS or (major in _GENERIC_BRANDS and compatible & _AVIF_BRANDS):
        return "AVIF"
    if major in _HEIF_BRANDS or major in _GENERIC_BRANDS:
        return "HEIF"
    return None


def _other_format(head: bytes) -> str:
    for offset, magic, name in _OTHER_FORMATS:
        if head[offset:].startswith(magic):
            return name
    return "text" if _looks_like_text(head) else "unknown"


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(char.isprintable() or char in "\t\r\n" for char in text)
