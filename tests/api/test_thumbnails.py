"""The thumbnail route (api.thumbnails) over a database the real daemon made: files, their
caching, the JSON form, errors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from httpx import Response
from PIL import Image
from sqlalchemy import update

from models.config import Config
from models.db import make_engine
from models.tables import Image as ImageRow
from tests.api.conftest import Library, config_for, ingest, serve
from tests.helpers import read_images

pytestmark = pytest.mark.both_backends


@pytest.mark.parametrize(("size", "edge"), [("small", 150), ("medium", 300)])
def test_thumbnail_is_a_cacheable_jpeg(library: Library, library_client, size: str, edge: int) -> None:
    url = f"/api/images/{library.ids['flower.jpg']}/thumbnails/{size}"
    response = library_client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    with Image.open(io.BytesIO(response.content)) as thumbnail:
        thumbnail.load()
        assert thumbnail.format == "JPEG" and max(thumbnail.size) == edge
    etag = response.headers["etag"]
    again = library_client.get(url, headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert library_client.get(url, headers={"if-none-match": '"other"'}).status_code == 200


def test_transparent_image_has_png_thumbnails(library: Library, library_client) -> None:
    response = library_client.get(f"/api/images/{library.ids['basn6a08.png']}/thumbnails/small")
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as thumbnail:
        assert thumbnail.format == "PNG" and thumbnail.mode == "RGBA"


def test_thumbnail_as_json_when_asked(library: Library, library_client) -> None:
    image_id = library.ids["flower.jpg"]
    response = library_client.get(
        f"/api/images/{image_id}/thumbnails/medium", headers={"accept": "application/json"}
    )
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "id": image_id,
        "size": "medium",
        "url": f"http://testserver/api/images/{image_id}/thumbnails/medium",
        "width": 300,
        "height": 225,
        "content_type": "image/jpeg",
    }
    browser = library_client.get(
        f"/api/images/{image_id}/thumbnails/medium", headers={"accept": "image/avif,image/webp,*/*;q=0.8"}
    )
    assert browser.headers["content-type"] == "image/jpeg"


def test_thumbnail_errors(library: Library, library_client) -> None:
    failed = library_client.get(f"/api/images/{library.ids['broken.png']}/thumbnails/small")
    assert (failed.status_code, failed.json()) == (400, {"error": "Processing Failure"})
    pending = library_client.get(f"/api/images/{library.pending_id}/thumbnails/small")
    assert pending.status_code == 409 and "error" in pending.json()
    assert library_client.get("/api/images/999999/thumbnails/small").status_code == 404
    unknown_size = library_client.get(f"/api/images/{library.ids['flower.jpg']}/thumbnails/huge")
    assert unknown_size.status_code == 404 and "error" in unknown_size.json()


def _one_image(tmp_path: Path, database_url: str) -> tuple[Config, dict[str, Any]]:
    """A database the real daemon made of hopper.jpg, and its row."""
    config = config_for(tmp_path, database={"url": database_url})
    ingest(config, ("hopper.jpg",))
    return config, read_images(config)[0]


def _small_thumbnail(config: Config, row: dict[str, Any]) -> Response:
    with serve(config) as client:
        return client.get(f"/api/images/{row['id']}/thumbnails/small")


def test_missing_thumbnail_file_is_404_not_500(tmp_path, database_url: str) -> None:
    config, row = _one_image(tmp_path, database_url)
    (config.data_dir / row["thumb_small_path"]).unlink()
    response = _small_thumbnail(config, row)
    assert response.status_code == 404 and "error" in response.json()


def test_a_done_image_without_thumbnails_is_404_not_409(tmp_path, database_url: str) -> None:
    config, row = _one_image(tmp_path, database_url)
    engine = make_engine(config.database_url)
    with engine.begin() as connection:
        connection.execute(update(ImageRow.__table__).values(thumb_small_path=None))
    engine.dispose()
    response = _small_thumbnail(config, row)
    assert (response.status_code, response.json()) == (404, {"error": "This image has no thumbnails."})
    assert "retry-after" not in response.headers
