"""Metadata of a decoded image: EXIF as JSON-safe values, capture time, camera, GPS, ICC name."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import ExifTags, Image, ImageCms

from daemon.stages.decode import DecodedImage

_EXIF_IFD = ExifTags.IFD.Exif
_GPS_IFD = ExifTags.IFD.GPSInfo
_IFD_NAMES = {_EXIF_IFD: "Exif", _GPS_IFD: "GPS", ExifTags.IFD.Interop: "Interop"}
# Blobs with no meaning outside the camera maker's software.
_SKIPPED_TAGS = {ExifTags.Base.MakerNote, ExifTags.Base.PrintImageMatching}
_MAX_TEXT = 2000


@dataclass(frozen=True)
class ImageMetadata:
    format: str
    width: int
    height: int
    mode: str
    size_bytes: int
    exif: dict[str, Any]
    orientation: int  # 1..8; anything else in the file counts as 1 (HEIF: 1, decoded upright)
    taken_at: str | None
    camera_make: str | None
    camera_model: str | None
    gps_latitude: float | None
    gps_longitude: float | None
    icc_profile: str | None


def extract_metadata(decoded: DecodedImage, size_bytes: int) -> ImageMetadata:
    """Read everything but the pixels. Broken EXIF gives what could be read, never an error.

    Pillow's plugins hand over the EXIF block and ICC profile of WebP, AVIF and HEIF as of JPEG,
    so all are read the same way.
    """
    exif = _read_exif(decoded.image)
    main = {ExifTags.TAGS.get(tag, f"Tag{tag}"): value for tag, value in exif.items()}
    exif_ifd = _read_ifd(exif, _EXIF_IFD)
    gps_ifd = _read_ifd(exif, _GPS_IFD)
    return ImageMetadata(
        format=decoded.format,
        width=decoded.width,
        height=decoded.height,
        mode=decoded.mode,
        size_bytes=size_bytes,
        exif=_json_safe_exif(exif),
        orientation=_orientation(main.get("Orientation")),
        taken_at=_exif_datetime(exif_ifd.get(ExifTags.Base.DateTimeOriginal))
        or _exif_datetime(main.get("DateTime")),
        camera_make=_clean_text(main.get("Make")),
        camera_model=_clean_text(main.get("Model")),
        gps_latitude=_gps_coordinate(gps_ifd.get(ExifTags.GPS.GPSLatitude), gps_ifd.get(ExifTags.GPS.GPSLatitudeRef), 90),
        gps_longitude=_gps_coordinate(
            gps_ifd.get(ExifTags.GPS.GPSLongitude), gps_ifd.get(ExifTags.GPS.GPSLongitudeRef), 180
        ),
        icc_profile=icc_profile_name(decoded.info.get("icc_profile")),
    )


def _read_exif(image: Image.Image) -> Image.Exif:
    try:
        return image.getexif()
    except Exception:  # Pillow raises many types on malformed EXIF; the pixels are still fine.
        return Image.Exif()


def _read_ifd(exif: Image.Exif, ifd: int) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(ifd))
    except Exception:
        return {}


def _json_safe_exif(exif: Image.Exif) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for tag, value in exif.items():
        if tag in _IFD_NAMES or tag in _SKIPPED_TAGS:
            continue
        safe = _json_safe(value)
        if safe is not None:
            result[ExifTags.TAGS.get(tag, f"Tag{tag}")] = safe
    for ifd, name in _IFD_NAMES.items():
        names = ExifTags.GPSTAGS if ifd == _GPS_IFD else ExifTags.TAGS
        entries = {}
        for tag, value in _read_ifd(exif, ifd).items():
            if tag in _SKIPPED_TAGS:
                continue
            safe = _json_safe(value)
            if safe is not None:
                entries[names.get(tag, f"Tag{tag}")] = safe
        if entries:
            result[name] = entries
    return result


def _json_safe(value: Any) -> Any:
    """A JSON value for an EXIF value, or None to leave it out (binary blobs, NaN)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float) or hasattr(value, "numerator"):
        try:
            number = float(value)
        except (ZeroDivisionError, ValueError, OverflowError):
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, bytes):
        # Only text stored as bytes is kept; anything else is raw binary.
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return None
        return _clean_text(text) if text.strip("\x00").isprintable() else None
    if isinstance(value, tuple | list):
        items = [_json_safe(item) for item in value]
        return items if all(item is not None for item in items) else None
    return None


def _clean_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.replace("\x00", "").strip()
    return text[:_MAX_TEXT] or None


def _orientation(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8 else 1


def _exif_datetime(value: Any) -> str | None:
    text = _clean_text(value)
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def _gps_coordinate(value: Any, reference: Any, limit: float) -> float | None:
    """Degrees, minutes, seconds (rationals) and N/S/E/W to signed decimal degrees."""
    if not isinstance(value, tuple | list) or len(value) != 3:
        return None
    try:
        degrees, minutes, seconds = (float(part) for part in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    decimal = degrees + minutes / 60 + seconds / 3600
    if not math.isfinite(decimal) or decimal > limit:
        return None
    if isinstance(reference, bytes):
        reference = reference.decode("ascii", "replace")
    if isinstance(reference, str) and reference.strip().upper() in ("S", "W"):
        decimal = -decimal
    return round(decimal, 7)


def icc_profile_name(icc: bytes | None) -> str | None:
    """The description stored in an ICC profile, e.g. "sRGB IEC61966-2.1"."""
    if not icc:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return _clean_text(ImageCms.getProfileDescription(profile)) or None
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
