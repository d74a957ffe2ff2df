"""The image routes (api.images) over a database the real daemon made: the list's shapes,
filters, pages and errors; one image's record."""

from __future__ import annotations

from datetime import datetime

import pytest

from models.config import replace
from models.db import make_engine
from models.tables import Image as ImageRow
from tests.api.conftest import Library, config_for, insert_pending, serve
from tests.helpers import read_images

pytestmark = pytest.mark.both_backends

RECORD_KEYS = {
    "id", "image_id", "filename", "status", "error", "error_kind", "sha256", "received_at", "processed_at",
    "processing_ms", "timings_ms", "metadata", "caption", "caption_model", "caption_device",
    "caption_runtime", "caption_status", "caption_error", "thumbnails", "links", "processed_by", "attempts", "can_reprocess",
}


SUMMARY_KEYS = {"id", "image_id", "filename", "status", "received_at", "error", "can_reprocess", "caption", "caption_status", "caption_error", "thumbnails", "links"}


# -- list ---------------------------------------------------------------------------------------


def test_list_is_newest_first_in_keyset_pages(library: Library, library_client) -> None:
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = library_client.get("/api/images", params=params).json()
        assert len(page["items"]) <= 2 and page["limit"] == 2
        for item in page["items"]:
            assert set(item) == SUMMARY_KEYS
            assert item["links"]["self"] == f"http://testserver/api/images/{item['id']}"
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    every_id = sorted([*library.ids.values()], reverse=True)
    assert seen == every_id  # each once, newest first
    assert library_client.get("/api/images").json()["next_cursor"] is None  # default 50 fits all


def test_list_items_carry_what_a_gallery_tile_shows(library: Library, library_client) -> None:
    items = {item["filename"]: item for item in library_client.get("/api/images").json()["items"]}
    done = items["flower.jpg"]
    # caption.model is "none": done, with neither a caption nor a caption error.
    assert (done["status"], done["error"], done["caption"], done["caption_error"]) == ("done", None, None, None)
    assert done["thumbnails"] == {
        "small": f"http://testserver/api/images/{done['id']}/thumbnails/small",
        "medium": f"http://testserver/api/images/{done['id']}/thumbnails/medium",
    }
    failed = items["broken.png"]
    assert failed["error"].startswith("corrupt image") and failed["thumbnails"] == {"small": None, "medium": None}
    assert items["waiting.jpg"]["thumbnails"] == {"small": None, "medium": None}
    detail = library_client.get(f"/api/images/{failed['id']}").json()
    assert {key: detail[key] for key in SUMMARY_KEYS} == failed


def test_list_filters_by_status_and_sha256(library: Library, library_client) -> None:
    failed = library_client.get("/api/images", params={"status": "failed"}).json()["items"]
    assert [item["filename"] for item in failed] == ["broken.png"]
    pending = library_client.get("/api/images", params={"status": "pending"}).json()["items"]
    assert [item["id"] for item in pending] == [library.pending_id]

    row = next(row for row in read_images(library.config) if row["filename"] == "flower.jpg")
    found = library_client.get("/api/images", params={"sha256": row["sha256"].upper()}).json()["items"]
    assert [item["id"] for item in found] == [row["id"]]
    assert library_client.get("/api/images", params={"sha256": "0" * 64}).json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "501"}, {"limit": "ten"}, {"status": "lost"}, {"cursor": "garbage"},
     {"cursor": "YmVmb3JlOng"}, {"sha256": "abc"}],
)
def test_list_rejects_bad_parameters(library_client, params: dict[str, str]) -> None:
    response = library_client.get("/api/images", params=params)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


# -- detail -------------------------------------------------------------------------------------


def test_detail_is_the_whole_record_without_server_paths(library: Library, library_client) -> None:
    image_id = library.ids["flower.jpg"]
    response = library_client.get(f"/api/images/{image_id}")
    assert response.status_code == 200
    record = response.json()
    assert set(record) == RECORD_KEYS
    assert record["image_id"] == record["id"]  # the original HTX API's name
    assert record["status"] == "done" and record["error"] is None
    # Durations to 0.1 ms.
    for value in (record["processing_ms"], *record["timings_ms"].values()):
        assert value is None or value == round(value, 1)
    assert set(record["timings_ms"]) == {"hash", "metadata", "thumbnails", "caption"}
    assert record["timings_ms"]["thumbnails"] > 0
    assert record["processing_ms"] >= record["timings_ms"]["thumbnails"]
    metadata = record["metadata"]
    assert (metadata["format"], metadata["width"], metadata["height"], metadata["mode"]) == ("JPEG", 480, 360, "RGB")
    assert metadata["camera"] == {"make": "Canon", "model": "Canon PowerShot S40"}
    assert metadata["exif"]["Exif"]["FNumber"] == 4.9  # the stored JSON, passed through intact
    assert "gps" not in metadata
    assert record["thumbnails"] == {
        "small": f"http://testserver/api/images/{image_id}/thumbnails/small",
        "medium": f"http://testserver/api/images/{image_id}/thumbnails/medium",
    }
    assert datetime.fromisoformat(record["received_at"]) <= datetime.fromisoformat(record["processed_at"])
    text = response.text
    stored = f"/{record['sha256'][:2]}/{record['sha256']}"  # originals/ab/<sha>.jpg, thumbnails/ab/<sha>-small.jpg
    for secret in (str(library.config.data_dir), stored, "originals/", "inbox_path", "stored_path"):
        assert secret not in text


def test_detail_has_camera_and_gps_only_where_present(library: Library, library_client, tmp_path, database_url: str) -> None:
    # exif_gps.jpg's GPS values are out of range: the daemon keeps the camera, not a location.
    metadata = library_client.get(f"/api/images/{library.ids['exif_gps.jpg']}").json()["metadata"]
    assert metadata["camera"] == {"make": "Make", "model": "XXX-XXX"} and "gps" not in metadata
    plain = library_client.get(f"/api/images/{library.ids['hopper.jpg']}").json()["metadata"]
    assert "gps" not in plain and "camera" not in plain and plain["exif"] == {}

    config = config_for(tmp_path, database={"url": database_url})
    image_id = insert_pending(config, "c" * 64)
    engine = make_engine(config.database_url)
    with engine.begin() as connection:
        connection.execute(
            ImageRow.__table__.update()
            .where(ImageRow.id == image_id)
            .values(gps_latitude=48.8584, gps_longitude=2.2945, camera_model="Pixel 8")
        )
    engine.dispose()
    with serve(config) as client:
        located = client.get(f"/api/images/{image_id}").json()["metadata"]
    assert located["gps"] == {"latitude": 48.8584, "longitude": 2.2945}
    assert located["camera"] == {"make": None, "model": "Pixel 8"}


def test_detail_of_failed_and_pending_images(library: Library, library_client) -> None:
    failed = library_client.get(f"/api/images/{library.ids['broken.png']}").json()
    assert failed["status"] == "failed" and failed["error_kind"] == "corrupt"
    assert failed["error"].startswith("corrupt image") and "/" not in failed["error"]
    assert failed["thumbnails"] == {"small": None, "medium": None}
    pending = library_client.get(f"/api/images/{library.pending_id}").json()
    assert pending["status"] == "pending" and pending["metadata"]["exif"] is None
    assert pending["processed_at"] is None and pending["thumbnails"] == {"small": None, "medium": None}


def test_links_use_public_url_when_set(library: Library) -> None:
    config = replace(library.config, api={"public_url": "https://photos.example.org/"})
    with serve(config) as client:
        record = client.get(f"/api/images/{library.ids['hopper.jpg']}").json()
        listed = client.get("/api/images").json()["items"][0]
    assert record["thumbnails"]["small"] == f"https://photos.example.org/api/images/{record['id']}/thumbnails/small"
    assert listed["links"]["self"].startswith("https://photos.example.org/api/images/")


def test_links_follow_the_request_host(library: Library) -> None:
    """Of the names the server answers to (api.allowed_hosts); any other is refused (test_hosts)."""
    with serve(replace(library.config, api={"allowed_hosts": ("inbox.lan",)})) as client:
        record = client.get(f"/api/images/{library.ids['hopper.jpg']}", headers={"host": "inbox.lan:8080"}).json()
    assert record["links"]["self"] == f"http://inbox.lan:8080/api/images/{record['id']}"


@pytest.mark.parametrize("path", ["/api/images/999999", "/api/images/99999999999999999999999", "/api/images/abc"])
def test_detail_unknown_id_is_404(library_client, path: str) -> None:
    response = library_client.get(path)
    assert response.status_code == 404
    assert set(response.json()) == {"error"}
