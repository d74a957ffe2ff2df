from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from daemon.stages.decode import decode
from daemon.stages.metadata import extract_metadata
from tests.helpers import CORPUS_DIR, corpus


def _metadata(path: Path):
    with decode(path, max_pixels=10**8, box=300) as decoded:
        return extract_metadata(decoded, path.stat().st_size)


@pytest.mark.parametrize("item", [item for item in corpus() if item.expected == "accept"], ids=lambda item: item.name)
def test_exif_is_json_safe_for_every_accepted_file(item) -> None:
    metadata = _metadata(item.path)
    text = json.dumps(metadata.exif, allow_nan=False)  # no bytes, no NaN, no custom types
    assert "\\u0000" not in text
    assert metadata.size_bytes == item.path.stat().st_size
    assert 1 <= metadata.orientation <= 8


def test_camera_and_capture_time() -> None:
    metadata = _metadata(CORPUS_DIR / "flower.jpg")
    assert metadata.camera_make == "Canon"
    assert metadata.camera_model and "Canon" in metadata.camera_model
    assert metadata.taken_at == "2003-12-14T12:01:44"
    assert metadata.exif["Exif"]["ExposureTime"] > 0


def test_icc_profile_name() -> None:
    assert _metadata(CORPUS_DIR / "xmp_test.jpg").icc_profile == "Adobe RGB (1998)"
    assert _metadata(CORPUS_DIR / "hopper.jpg").icc_profile is None


def test_gps_becomes_signed_decimal_degrees(tmp_path: Path) -> None:
    exif = Image.Exif()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "S"
    gps[ExifTags.GPS.GPSLatitude] = (Fraction(33), Fraction(51), Fraction(5436, 100))
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (Fraction(151), Fraction(12), Fraction(3240, 100))
    path = tmp_path / "sydney.jpg"
    Image.new("RGB", (32, 32), "teal").save(path, exif=exif)
    metadata = _metadata(path)
    assert metadata.gps_latitude == pytest.approx(-33.8651, abs=1e-4)
    assert metadata.gps_longitude == pytest.approx(151.2090, abs=1e-4)
    assert metadata.exif["GPS"]["GPSLatitudeRef"] == "S"


def test_junk_gps_and_orientation_are_ignored_not_fatal() -> None:
    gps = _metadata(CORPUS_DIR / "exif_gps.jpg")  # GPS tags hold garbage
    assert gps.gps_latitude is None and gps.gps_longitude is None
    php = _metadata(CORPUS_DIR / "POC_phpinfo-metadata.jpg")  # Orientation is a PHP string
    assert php.orientation == 1


def test_corrupt_exif_gives_what_could_be_read() -> None:
    metadata = _metadata(CORPUS_DIR / "hopper_bad_exif.jpg")
    assert metadata.width == 500
    json.dumps(metadata.exif, allow_nan=False)
