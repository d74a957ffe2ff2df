from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from daemon.stages.decode import decode
from daemon.stages.metadata import extract_metadata
from daemon.stages.thumbnails import Thumbnail, make_thumbnails
from models.config import Config
from models.stores import open_store
from tests.helpers import CORPUS_DIR


def _thumbnails(path: Path, config: Config) -> dict[str, Thumbnail]:
    with decode(path, max_pixels=10**8, box=config.thumbnails.medium) as decoded:
        metadata = extract_metadata(decoded, 0)
        made = make_thumbnails(
            decoded.image,
            orientation=metadata.orientation,
            icc=decoded.info.get("icc_profile"),
            sha256=path.name.ljust(64, "0"),
            config=config.thumbnails,
            store=open_store(config),
        )
    return {thumbnail.size_name: thumbnail for thumbnail in made}


def _open(config: Config, thumbnail: Thumbnail) -> Image.Image:
    image = Image.open(config.data_dir / thumbnail.path)
    image.load()
    return image


def _difference(first: Image.Image, second: Image.Image) -> float:
    """Mean absolute difference per channel, 0..255."""
    return sum(ImageStat.Stat(ImageChops.difference(first.convert("RGB"), second.convert("RGB"))).mean) / 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_an_upright_thumbnail(config: Config, orientation: int) -> None:
    reference = _open(config, _thumbnails(CORPUS_DIR / "Landscape_1.jpg", config)["medium"])
    thumbnails = _thumbnails(CORPUS_DIR / f"Landscape_{orientation}.jpg", config)
    medium = _open(config, thumbnails["medium"])
    assert medium.size == (300, 200)  # displayed landscape, whatever the stored shape
    assert _difference(medium, reference) < 8
    # A wrongly turned image is far from the reference: the check has teeth.
    assert _difference(medium.transpose(Image.Transpose.ROTATE_180), reference) > 20


def test_sizes_fit_the_boxes_keep_aspect_and_never_enlarge(config: Config) -> None:
    thumbnails = _thumbnails(CORPUS_DIR / "xmp_test.jpg", config)  # 2000 x 1072
    assert (thumbnails["medium"].width, thumbnails["medium"].height) == (300, 161)
    assert (thumbnails["small"].width, thumbnails["small"].height) == (150, 80)
    tiny = _thumbnails(CORPUS_DIR / "hopper.jpg", config)  # 128 x 128
    assert (tiny["medium"].width, tiny["small"].width) == (128, 128)


def test_thumbnails_are_stripped_srgb_jpeg_at_the_configured_quality(config: Config) -> None:
    thumbnails = _thumbnails(CORPUS_DIR / "xmp_test.jpg", config)  # Adobe RGB, EXIF, XMP
    image = _open(config, thumbnails["medium"])
    assert image.format == "JPEG" and image.mode == "RGB"
    assert "icc_profile" not in image.info and "exif" not in image.info and "xmp" not in image.info
    assert thumbnails["medium"].path.endswith("-medium.jpg")


def test_colour_profile_is_converted_to_srgb(config: Config) -> None:
    # The same picture, once with an Adobe RGB profile: converted, it must differ from the
    # naive reading of the numbers (Adobe RGB greens are more saturated than sRGB's).
    thumbnails = _thumbnails(CORPUS_DIR / "xmp_test.jpg", config)
    converted = _open(config, thumbnails["small"])
    with Image.open(CORPUS_DIR / "xmp_test.jpg") as original:
        naive = original.convert("RGB").resize(converted.size)
    assert _difference(converted, naive) > 2


def test_cmyk_becomes_rgb_with_the_right_colours(config: Config) -> None:
    cmyk = _open(config, _thumbnails(CORPUS_DIR / "pil_sample_cmyk.jpg", config)["medium"])
    rgb = _open(config, _thumbnails(CORPUS_DIR / "pil_sample_rgb.jpg", config)["medium"])
    assert cmyk.mode == "RGB"
    assert _difference(cmyk, rgb) < 12


@pytest.mark.parametrize("name", ["basn0g16.png", "basn2c16.png"])
def test_sixteen_bit_inputs_keep_their_tones(config: Config, name: str) -> None:
    image = _open(config, _thumbnails(CORPUS_DIR / name, config)["medium"])
    assert image.mode in ("L", "RGB")
    low, high = image.convert("L").getextrema()
    assert high - low > 100  # a gradient, not a blank or clipped white square


def test_transparency_is_kept_as_png(config: Config) -> None:
    thumbnails = _thumbnails(CORPUS_DIR / "tbbn3p08.png", config)  # palette with tRNS
    image = _open(config, thumbnails["small"])
    assert image.format == "PNG" and image.mode == "RGBA"
    assert image.getchannel("A").getextrema()[0] < 255


def test_an_opaque_alpha_channel_is_dropped(config: Config) -> None:
    image = _open(config, _thumbnails(CORPUS_DIR / "icc_profile.png", config)["medium"])  # RGBA, all opaque
    assert image.format == "JPEG"
