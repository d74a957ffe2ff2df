"""HEIF, WebP and AVIF through the stages: decode, metadata and thumbnails as for a JPEG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from daemon.errors import CorruptImage, TooLarge, UnsupportedFormat
from daemon.stages.decode import READABLE, configure_pillow, decode, open_image
from daemon.stages.metadata import extract_metadata
from daemon.stages.pipeline import decode_cost
from daemon.stages.thumbnails import render_thumbnails
from models.config import Config
from tests.helpers import CORPUS_DIR
from tests.phone_samples import (
    CAMERA,
    ICC_NAME,
    RED,
    STORED_SIZE,
    TAKEN_AT,
    UPRIGHT_SIZE,
    garbage_after_magic,
    truncated,
    write_sample,
)

ROOT = Path(__file__).resolve().parents[3]
PHONE_FORMATS = ("HEIF", "WEBP", "AVIF")


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("phone")
    return {image_format: write_sample(folder, image_format) for image_format in PHONE_FORMATS}


def _near(colour: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return all(abs(a - b) <= 30 for a, b in zip(colour, expected, strict=False))


@pytest.mark.parametrize("image_format", PHONE_FORMATS)
def test_exif_orientation_and_icc_are_read_as_for_a_jpeg(samples: dict[str, Path], image_format: str) -> None:
    path = samples[image_format]
    with decode(path, max_pixels=10**8, box=300) as decoded:
        metadata = extract_metadata(decoded, path.stat().st_size)
        thumbnails = render_thumbnails(
            decoded.image, orientation=metadata.orientation, icc=decoded.info.get("icc_profile"), config=Config().thumbnails
        )
    assert metadata.format == image_format
    assert (metadata.camera_make, metadata.camera_model) == CAMERA
    assert metadata.taken_at == TAKEN_AT
    assert metadata.icc_profile == ICC_NAME
    assert metadata.exif["Make"] == CAMERA[0]
    if image_format == "HEIF":
        # libheif turns the pixels as the container says and the plugin resets the EXIF tag:
        # stored upright, shown once turned, never twice.
        assert ((metadata.width, metadata.height), metadata.orientation) == (UPRIGHT_SIZE, 1)
    else:
        assert ((metadata.width, metadata.height), metadata.orientation) == (STORED_SIZE, 6)
    medium = thumbnails.medium
    assert thumbnails.file_format == "JPEG" and medium.mode == "RGB"
    assert medium.size == UPRIGHT_SIZE  # 180 x 120 fits the 300 box; never enlarged
    assert thumbnails.small.size == (150, 100)
    # The red corner, top left as stored, is top right once upright.
    assert _near(medium.getpixel((medium.width - 5, 5)), RED), medium.getpixel((medium.width - 5, 5))
    assert not _near(medium.getpixel((5, 5)), RED)


@pytest.mark.parametrize("image_format", PHONE_FORMATS)
def test_transparency_gives_png_thumbnails(tmp_path: Path, image_format: str) -> None:
    path = write_sample(tmp_path, image_format, alpha=True, orientation=1)
    with decode(path, max_pixels=10**8, box=300) as decoded:
        assert decoded.mode == "RGBA"
        rendered = render_thumbnails(decoded.image, orientation=1, icc=None, config=Config().thumbnails)
    assert rendered.file_format == "PNG" and rendered.medium.mode == "RGBA"


@pytest.mark.parametrize(
    ("name", "image_format", "size", "mode"),
    [
        ("hopper.heif", "HEIF", (128, 128), "RGB"),
        ("hopper.avif", "AVIF", (128, 128), "RGB"),
        ("flower.webp", "WEBP", (480, 360), "RGB"),
        ("webp_named_as.png", "WEBP", (200, 150), "RGBA"),  # by the bytes, not the name
    ],
)
def test_corpus_files_decode_once_enabled_and_are_unsupported_by_default(
    name: str, image_format: str, size: tuple[int, int], mode: str
) -> None:
    with decode(CORPUS_DIR / name, max_pixels=10**8, box=300, formats={"JPEG", "PNG", image_format}) as decoded:
        assert (decoded.format, decoded.image.size, decoded.mode) == (image_format, size, mode)
    with pytest.raises(UnsupportedFormat) as raised:
        open_image(CORPUS_DIR / name, max_pixels=10**8, box=300)
    assert raised.value.message.endswith("(only JPEG and PNG are accepted)")


@pytest.mark.parametrize("image_format", PHONE_FORMATS)
@pytest.mark.parametrize("damage", [truncated, garbage_after_magic], ids=["truncated", "garbage"])
def test_broken_files_are_corrupt_with_a_reason(samples: dict[str, Path], tmp_path: Path, image_format: str, damage) -> None:
    broken = damage(samples[image_format], tmp_path / "broken.bin")
    with pytest.raises(CorruptImage) as raised:
        decode(broken, max_pixels=10**8, box=300)
    message = raised.value.message
    assert message.startswith("corrupt image: ") and len(message) > len("corrupt image: ")
    assert str(tmp_path) not in message and "/" not in message


@pytest.mark.parametrize("image_format", PHONE_FORMATS)
def test_pixel_limit_holds_for_every_format(samples: dict[str, Path], image_format: str) -> None:
    with pytest.raises(TooLarge, match="pipeline.max_pixels"):
        open_image(samples[image_format], max_pixels=10_000, box=300, formats=READABLE)  # 21,600 pixels
    configure_pillow(5_000)  # Pillow's own guard, inside Image.open, for the plugins too
    try:
        with pytest.raises(TooLarge, match="21,600 pixels"):
            open_image(samples[image_format], max_pixels=10**8, box=300, formats=READABLE)
    finally:
        configure_pillow(89_478_485)


@pytest.mark.parametrize(("image_format", "peak", "held"), [("HEIF", 3, 1), ("WEBP", 4, 3), ("AVIF", 3, 2)])
def test_the_budget_is_told_of_the_decoders_own_copies(
    samples: dict[str, Path], config: Config, image_format: str, peak: int, held: int
) -> None:
    with open_image(samples[image_format], max_pixels=10**8, box=300, formats=READABLE) as opened:
        pixels = opened.pixel_bytes
        assert pixels == 120 * 180 * 4  # known from the header, nothing decoded yet
        assert (opened.decode_bytes, opened.held_bytes) == (peak * pixels, held * pixels)
        assert decode_cost(opened, config, None) >= opened.decode_bytes
    with open_image(CORPUS_DIR / "hopper.png", max_pixels=10**8, box=300) as opened:
        assert opened.decode_bytes == opened.held_bytes == opened.pixel_bytes


def test_heif_support_is_loaded_on_the_first_heif_file_only(samples: dict[str, Path]) -> None:
    script = (
        "import sys; from pathlib import Path; from daemon.stages.decode import READABLE, decode\n"
        f"decode(Path({str(CORPUS_DIR / 'flower.webp')!r}), max_pixels=10**8, box=300, formats=READABLE).close()\n"
        "assert 'pillow_heif' not in sys.modules\n"
        f"decode(Path({str(samples['HEIF'])!r}), max_pixels=10**8, box=300, formats=READABLE).close()\n"
        "assert 'pillow_heif' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)



@pytest.mark.parametrize("image_format", PHONE_FORMATS)
def test_a_stored_original_is_read_for_its_caption_whatever_the_formats_are_now(
    samples: dict[str, Path], config: Config, image_format: str
) -> None:
    """The caption stage and `htx recaption` decode stored originals, accepted when they came in."""
    from daemon.captions.recaption import caption_input

    assert config.pipeline.formats == ("jpeg", "png")
    image = caption_input(config, samples[image_format], 1, 64)
    assert (image.size, image.mode) == ((64, 64), "RGB")


# Runs in a fresh interpreter, as tests/daemon/stages/test_pipeline.py's measure: the
# high-water mark of its own memory (VmHWM) over its memory before `prepare`, and what
# `decode_cost` told the budget. The small file first does every lazy import.
_MEASURE = """
import json, sys, tempfile
from pathlib import Path
from daemon.stages.decode import READABLE, configure_pillow, open_image
from daemon.stages.pipeline import decode_box, decode_cost, prepare
from models import config as config_module
from models.stores import open_store

def status_kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

small, source = Path(sys.argv[1]), Path(sys.argv[2])
with tempfile.TemporaryDirectory() as scratch:
    config = config_module.parse({"paths": {"data_dir": scratch}, "pipeline": {"formats": ["heif", "webp", "avif"]}}, base_dir=Path(scratch))
    configure_pillow(config.pipeline.max_pixels)
    run = lambda path, name: prepare(path, sha256=name * 64, size_bytes=1, config=config, store=open_store(config), caption_size=384)
    run(small, "0")
    with open_image(source, max_pixels=config.pipeline.max_pixels, box=decode_box(config, 384), formats=READABLE) as opened:
        cost, pixels = decode_cost(opened, config, 384), opened.pixel_bytes
    baseline = status_kb("VmRSS")
    run(source, "1")
    print(json.dumps({"extra": (status_kb("VmHWM") - baseline) * 1024, "cost": cost, "pixels": pixels}))
"""
LARGE = (3000, 2000)  # 24 MB decoded: far above the interpreter's own noise
_FAST = {"HEIF": {"enc_params": {"preset": "ultrafast"}}, "AVIF": {"speed": 10}, "WEBP": {}}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)")
@pytest.mark.parametrize("image_format", PHONE_FORMATS)
def test_what_the_budget_is_told_covers_what_a_decode_takes(
    samples: dict[str, Path], tmp_path: Path, image_format: str
) -> None:
    image = Image.new("RGB", LARGE, (200, 170, 120))
    noise = Image.effect_noise((256, 256), 40)
    image.paste(Image.merge("RGB", (noise, noise, noise)), (0, 0))
    large = tmp_path / "large.bin"
    image.save(large, format=image_format, quality=40, **_FAST[image_format])
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(samples[image_format]), str(large)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["pixels"] == LARGE[0] * LARGE[1] * 4
    # The decode shows (the measurement works), and the budget was told at least as much.
    assert measured["extra"] > 1.5 * measured["pixels"], measured
    assert measured["extra"] <= measured["cost"] * 1.05, measured
