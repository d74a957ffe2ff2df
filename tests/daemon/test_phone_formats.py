"""Phone and web formats (pipeline.formats) through a real daemon: HEIF, WebP and AVIF files in
the inbox become done records once enabled, and fail as unsupported, as a GIF does, when not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from models.config import Config
from tests.helpers import CORPUS_DIR, copy_in, finished, read_images, wait_for
from tests.phone_samples import CAMERA, ICC_NAME, STORED_SIZE, TAKEN_AT, UPRIGHT_SIZE, garbage_after_magic, truncated, write_sample

pytestmark = pytest.mark.both_backends

ALL_FORMATS = ["jpeg", "png", "heif", "webp", "avif"]
# name in the inbox -> format, width and height of its record, thumbnail format
GOOD = {
    "phone.heic": ("HEIF", *UPRIGHT_SIZE, "JPEG"),  # libheif turns it: stored upright
    "phone.webp": ("WEBP", *STORED_SIZE, "JPEG"),  # stored sideways, EXIF orientation 6
    "phone.avif": ("AVIF", *STORED_SIZE, "JPEG"),
    "clear.avif": ("AVIF", *STORED_SIZE, "PNG"),  # transparent: PNG thumbnails
    "hopper.heif": ("HEIF", 128, 128, "JPEG"),
    "hopper.avif": ("AVIF", 128, 128, "JPEG"),
    "flower.webp": ("WEBP", 480, 360, "JPEG"),
    "webp_named_as.png": ("WEBP", 200, 150, "PNG"),  # by its bytes, not its name
}
BROKEN = ("cut.heic", "cut.webp", "cut.avif", "noise.heic", "noise.webp", "noise.avif")
EXTENSIONS = {"HEIF": "heic", "WEBP": "webp", "AVIF": "avif"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every file of the tests by its name in the inbox: made here, from the corpus, broken."""
    folder = tmp_path_factory.mktemp("phone-files")
    made = {
        "phone.heic": write_sample(folder, "HEIF"),
        "phone.webp": write_sample(folder, "WEBP"),
        "phone.avif": write_sample(folder, "AVIF"),
        "clear.avif": write_sample(folder, "AVIF", name="clear.avif", alpha=True, orientation=1),
    }
    made |= {name: CORPUS_DIR / name for name in ("hopper.heif", "hopper.avif", "flower.webp", "webp_named_as.png", "hopper.png")}
    for extension in ("heic", "webp", "avif"):
        made[f"cut.{extension}"] = truncated(made[f"phone.{extension}"], folder / f"cut.{extension}")
        made[f"noise.{extension}"] = garbage_after_magic(made[f"phone.{extension}"], folder / f"noise.{extension}")
    return made


def _process(config: Config, start_daemon: Callable, files: dict[str, Path], names) -> dict[str, dict]:
    daemon = start_daemon(config)
    for name in names:
        copy_in(files[name], config.inbox_dir / name)
    rows = wait_for(
        lambda: (rows := read_images(config)) and len(finished(rows)) == len(names) and rows,
        timeout=60,
        what="every file to finish",
    )
    assert daemon.wait_idle(timeout=10)  # originals move just after their row is committed
    assert list(config.inbox_dir.iterdir()) == []
    return {row["filename"]: row for row in rows}


def test_enabled_formats_become_done_records_with_upright_thumbnails(
    make_config: Callable[..., Config], start_daemon, files: dict[str, Path]
) -> None:
    config = make_config(pipeline={"workers": 2, "formats": ALL_FORMATS})
    rows = _process(config, start_daemon, files, [*GOOD, *BROKEN])
    for name, (image_format, width, height, thumbnail_format) in GOOD.items():
        row = rows[name]
        assert (row["status"], row["error"]) == ("done", None), name
        assert (row["format"], row["width"], row["height"]) == (image_format, width, height), name
        stored = config.data_dir / row["stored_path"]
        assert stored.name == f"{row['sha256']}.{EXTENSIONS[image_format]}"
        assert stored.read_bytes() == files[name].read_bytes()  # the original keeps its bytes
        for size, edge in (("small", 150), ("medium", 300)):
            with Image.open(config.data_dir / row[f"thumb_{size}_path"]) as thumbnail:
                assert thumbnail.format == thumbnail_format, (name, size)
                assert thumbnail.size == (row[f"thumb_{size}_width"], row[f"thumb_{size}_height"])
                assert max(thumbnail.size) <= edge
    for name in ("phone.heic", "phone.webp", "phone.avif"):
        row = rows[name]
        assert (row["thumb_medium_width"], row["thumb_medium_height"]) == UPRIGHT_SIZE, name  # turned once
        assert (row["camera_make"], row["camera_model"], row["taken_at"]) == (*CAMERA, TAKEN_AT), name
        assert row["icc_profile"] == ICC_NAME, name
    for name in BROKEN:
        row = rows[name]
        assert (row["status"], row["error_kind"]) == ("failed", "corrupt"), name
        assert row["error"].startswith("corrupt image: not a readable "), (name, row["error"])
        assert str(config.data_dir) not in row["error"] and row["stored_path"].startswith("failed/")


def test_by_default_they_fail_as_unsupported_like_a_gif(
    make_config: Callable[..., Config], start_daemon, files: dict[str, Path]
) -> None:
    config = make_config()
    assert config.pipeline.formats == ("jpeg", "png")
    rows = _process(config, start_daemon, files, ["phone.heic", "phone.webp", "phone.avif", "webp_named_as.png", "cut.heic"])
    expected = {"phone.heic": "HEIF", "phone.webp": "WebP", "phone.avif": "AVIF", "webp_named_as.png": "WebP", "cut.heic": "HEIF"}
    for name, spoken in expected.items():
        row = rows[name]
        assert (row["status"], row["error_kind"]) == ("failed", "unsupported"), name
        assert row["error"] == f"unsupported format: {spoken} (only JPEG and PNG are accepted)"
        assert row["stored_path"].startswith("failed/") and row["width"] is None


def test_a_format_left_out_fails_and_the_message_names_those_accepted(
    make_config: Callable[..., Config], start_daemon, files: dict[str, Path]
) -> None:
    config = make_config(pipeline={"formats": ["jpeg", "heif"]})
    rows = _process(config, start_daemon, files, ["phone.heic", "phone.webp", "hopper.png"])
    assert rows["phone.heic"]["status"] == "done"
    assert rows["phone.webp"]["error"] == "unsupported format: WebP (only JPEG and HEIF are accepted)"
    assert rows["hopper.png"]["error"] == "unsupported format: PNG (only JPEG and HEIF are accepted)"
