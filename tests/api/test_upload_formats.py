"""POST /api/images with pipeline.formats: HEIF, WebP and AVIF uploads are taken once enabled,
told by their bytes, and refused with the original API's 400 while they are not."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from models.config import Config
from tests.api.conftest import serve, wait_status
from tests.helpers import CORPUS_DIR
from tests.phone_samples import STORED_SIZE, UPRIGHT_SIZE, truncated, write_sample

ALL_FORMATS = ["jpeg", "png", "heif", "webp", "avif"]
UNSUPPORTED = {"error": "Only JPEG and PNG files are allowed."}
# format -> extension, content type of the original, record width and height
EXPECTED = {
    "HEIF": ("heic", "image/heic", UPRIGHT_SIZE),
    "WEBP": ("webp", "image/webp", STORED_SIZE),
    "AVIF": ("avif", "image/avif", STORED_SIZE),
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("phone-uploads")
    return {image_format: write_sample(folder, image_format) for image_format in EXPECTED}


def _post(client, name: str | None, body: bytes, content_type: str = "image/jpeg"):
    # The client's content type says JPEG whatever is sent: only the bytes count.
    return client.post("/api/images", files={"file": (name, body, content_type)})


def _leftovers(config: Config) -> list[str]:
    return [path.name for folder in (config.uploads_dir, config.inbox_dir) if folder.is_dir() for path in folder.iterdir()]


@pytest.mark.parametrize("image_format", list(EXPECTED))
def test_an_enabled_format_is_taken_processed_and_served_with_its_type(
    make_config: Callable[..., Config], start_daemon, samples: dict[str, Path], image_format: str
) -> None:
    config = make_config(pipeline={"formats": ALL_FORMATS})
    start_daemon(config)
    extension, content_type, size = EXPECTED[image_format]
    body = samples[image_format].read_bytes()
    with serve(config) as client:
        response = _post(client, None, body)  # no name: one from the digest and the format
        assert response.status_code == 202, response.text
        sha256 = hashlib.sha256(body).hexdigest()
        assert response.json()["filename"] == f"upload-{sha256[:12]}.{extension}"
        row = wait_status(config, sha256)
        record = client.get(f"/api/images/{row['id']}").json()
        assert record["status"] == "done", record
        assert (record["metadata"]["format"], record["metadata"]["width"], record["metadata"]["height"]) == (image_format, *size)
        original = client.get(f"/api/images/{row['id']}/original")
        assert original.status_code == 200
        assert original.headers["content-type"] == content_type and original.content == body
        for size_name in ("small", "medium"):
            thumbnail = client.get(f"/api/images/{row['id']}/thumbnails/{size_name}")
            assert (thumbnail.status_code, thumbnail.headers["content-type"]) == (200, "image/jpeg")
    assert row["stored_path"].endswith(f"{sha256}.{extension}")


@pytest.mark.parametrize("name", ["hopper.heif", "hopper.avif", "flower.webp", "webp_named_as.png"])
def test_by_default_they_are_refused_with_the_original_message(config: Config, name: str) -> None:
    with serve(config) as client:
        response = _post(client, "photo.jpg", (CORPUS_DIR / name).read_bytes())
    assert (response.status_code, response.json()) == (400, UNSUPPORTED)
    assert not _leftovers(config)


def test_with_other_formats_the_message_names_the_accepted_ones(make_config: Callable[..., Config]) -> None:
    config = make_config(pipeline={"formats": ["jpeg", "heif"]})
    with serve(config) as client:
        for name in ("hopper.png", "hopper.gif", "flower.webp"):
            response = _post(client, name, (CORPUS_DIR / name).read_bytes())
            assert (response.status_code, response.json()) == (400, {"error": "Only JPEG and HEIF files are allowed."}), name
    assert not _leftovers(config)


@pytest.mark.parametrize("image_format", list(EXPECTED))
def test_a_broken_upload_of_an_enabled_format_fails_in_the_daemon_with_a_reason(
    make_config: Callable[..., Config], start_daemon, samples: dict[str, Path], tmp_path: Path, image_format: str
) -> None:
    """Accepted by its magic, judged by the daemon: a failed record that says why."""
    config = make_config(pipeline={"formats": ALL_FORMATS})
    start_daemon(config)
    body = truncated(samples[image_format], tmp_path / "cut").read_bytes()
    with serve(config) as client:
        response = _post(client, "cut.bin", body)
        assert response.status_code == 202, response.text
        row = wait_status(config, response.json()["sha256"])
    assert (row["status"], row["error_kind"]) == ("failed", "corrupt")
    assert row["error"].startswith("corrupt image: not a readable ")


def test_a_file_shorter_than_the_sniffed_head_is_still_told(
    make_config: Callable[..., Config], start_daemon, samples: dict[str, Path]
) -> None:
    """Sniffed when its part ends: 20 bytes of HEIF are HEIF (the daemon fails them), of WebP refused."""
    config = make_config(pipeline={"formats": ["jpeg", "heif"]})
    start_daemon(config)
    with serve(config) as client:
        taken = _post(client, "short.heic", samples["HEIF"].read_bytes()[:20])
        assert taken.status_code == 202, taken.text
        refused = _post(client, "short.webp", samples["WEBP"].read_bytes()[:20])
    assert (refused.status_code, refused.json()) == (400, {"error": "Only JPEG and HEIF files are allowed."})
    assert wait_status(config, taken.json()["sha256"])["error_kind"] == "corrupt"
