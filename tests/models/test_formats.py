"""Format sniffing by the first bytes, over the test corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import config as config_module
from models.config import ConfigError
from models.formats import (
    DEFAULT_ACCEPTED,
    DISPLAY_NAMES,
    EXTENSIONS,
    FORMATS,
    SNIFF_BYTES,
    accepted_formats,
    sniff_format,
    spoken,
)
from models.image_errors import CorruptImage, UnsupportedFormat
from tests.helpers import CORPUS_DIR, corpus


@pytest.mark.parametrize("item", corpus(), ids=lambda item: item.name)
def test_format_is_decided_by_the_bytes_not_the_name(item) -> None:
    head = item.path.read_bytes()[:32]
    if item.expected == "reject-unsupported":
        with pytest.raises(UnsupportedFormat) as raised:
            sniff_format(head)
        assert raised.value.message.startswith("unsupported format: ")
        expected_name = item.true_format.split()[0]
        assert raised.value.format_name.lower() == {"text": "text"}.get(expected_name, expected_name).lower()
    elif "damaged signature" in item.true_format or item.name == "empty.jpg":
        with pytest.raises(CorruptImage):
            sniff_format(head)
    else:
        assert sniff_format(head) == item.true_format.split()[0]


# -- pipeline.formats: HEIF, WebP and AVIF once enabled -----------------------------------------

ALL = accepted_formats(FORMATS)


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    """An ISO-BMFF `ftyp` box, then the start of the next box."""
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\0\0\0\x20meta"


@pytest.mark.parametrize(
    ("name", "found"),
    [("hopper.heif", "HEIF"), ("hopper.avif", "AVIF"), ("flower.webp", "WEBP"), ("webp_named_as.png", "WEBP")],
)
def test_phone_and_web_formats_are_told_once_enabled(name: str, found: str) -> None:
    head = (CORPUS_DIR / name).read_bytes()[:SNIFF_BYTES]
    assert sniff_format(head, ALL) == found
    assert sniff_format(head, {"JPEG", found}) == found
    with pytest.raises(UnsupportedFormat) as raised:
        sniff_format(head)  # the default: JPEG and PNG, as before
    assert raised.value.message == f"unsupported format: {DISPLAY_NAMES[found]} (only JPEG and PNG are accepted)"
    assert raised.value.kind == "unsupported"


@pytest.mark.parametrize(
    ("head", "found"),
    [
        (_ftyp(b"heic", b"mif1", b"heic"), "HEIF"),
        (_ftyp(b"heix", b"mif1"), "HEIF"),
        (_ftyp(b"hevc", b"msf1"), "HEIF"),  # an image sequence (burst, live photo)
        (_ftyp(b"mif1", b"heic"), "HEIF"),
        (_ftyp(b"mif1"), "HEIF"),  # no codec brand: libheif finds out
        (_ftyp(b"avif", b"mif1", b"miaf"), "AVIF"),
        (_ftyp(b"avis", b"msf1"), "AVIF"),
        (_ftyp(b"mif1", b"avif", b"miaf"), "AVIF"),  # generic first, AV1 among the compatible
        (_ftyp(b"msf1", b"miaf", b"avis"), "AVIF"),
        (_ftyp(b"mif1", b"miaf", b"MA1B", b"avif"), "AVIF"),  # past the first 32 bytes
    ],
)
def test_iso_bmff_brands_tell_heif_from_avif(head: bytes, found: str) -> None:
    assert sniff_format(head, ALL) == found


def test_brands_outside_the_ftyp_box_do_not_count() -> None:
    # A 16-byte box has no compatible brands: the "avif" after it is the next box's bytes.
    head = (16).to_bytes(4, "big") + b"ftypmif1\0\0\0\0" + b"avif" + b"\0" * 12
    assert sniff_format(head, ALL) == "HEIF"
    # Video, not an image: unknown, as before.
    with pytest.raises(UnsupportedFormat, match="unknown"):
        sniff_format(_ftyp(b"isom", b"mp41", b"avc1"), ALL)


def test_the_message_names_the_formats_accepted() -> None:
    gif = (CORPUS_DIR / "hopper.gif").read_bytes()[:SNIFF_BYTES]
    with pytest.raises(UnsupportedFormat) as raised:
        sniff_format(gif, accepted_formats(["jpeg", "png", "heif", "webp"]))
    assert raised.value.message == "unsupported format: GIF (only JPEG, PNG, HEIF and WebP are accepted)"
    assert raised.value.format_name == "GIF"
    png = (CORPUS_DIR / "hopper.png").read_bytes()[:SNIFF_BYTES]
    with pytest.raises(UnsupportedFormat, match=r"^unsupported format: PNG \(only HEIF is accepted\)$"):
        sniff_format(png, accepted_formats(["heif"]))
    assert spoken(ALL) == "JPEG, PNG, HEIF, WebP and AVIF"
    assert spoken(accepted_formats(["avif", "jpeg"])) == "JPEG and AVIF"  # always in one order


def test_every_format_has_an_extension_for_its_stored_original() -> None:
    assert {EXTENSIONS[name] for name in ALL} == {"jpg", "png", "heic", "webp", "avif"}


def test_pipeline_formats_default_to_jpeg_and_png() -> None:
    config = config_module.parse({}, base_dir=Path("."))
    assert config.pipeline.formats == ("jpeg", "png")
    assert accepted_formats(config.pipeline.formats) == DEFAULT_ACCEPTED
    every = config_module.parse({"pipeline": {"formats": ["heif", "webp", "avif", "jpeg", "png"]}}, base_dir=Path("."))
    assert accepted_formats(every.pipeline.formats) == ALL
    assert config_module.as_dict(every)["pipeline"]["formats"] == ["heif", "webp", "avif", "jpeg", "png"]


@pytest.mark.parametrize(
    ("formats", "message"),
    [
        ([], "pipeline.formats: a list of one or more of jpeg, png, heif, webp, avif, got []"),
        (["jpeg", "heic"], "pipeline.formats: a list of one or more of jpeg, png, heif, webp, avif, got ['jpeg', 'heic']"),
        (["JPEG"], "pipeline.formats: a list of one or more of"),
        (["gif"], "pipeline.formats: a list of one or more of"),
        ("heif", "pipeline.formats: expected a list of strings"),
    ],
)
def test_wrong_pipeline_formats_name_the_key(formats, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config_module.parse({"pipeline": {"formats": formats}}, base_dir=Path("."))
    assert message in str(raised.value)
