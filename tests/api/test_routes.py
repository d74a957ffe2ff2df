"""Every read route over a database the real daemon made: shapes, filters, pages, errors."""

from __future__ import annotations

import io
import math
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import delete, insert, update

from api import routes
from models import migrate, queries
from models.config import replace
from models.db import make_engine
from models.tables import Image as ImageRow
from tests.api.conftest import Library, config_for, insert_pending, serve
from tests.helpers import CORPUS_DIR, PREPARING, GatedCaptioner, finished, read_images, wait_for, write_config_file

pytestmark = pytest.mark.both_backends

RECORD_KEYS = {
    "id", "image_id", "filename", "status", "error", "error_kind", "sha256", "received_at", "processed_at",
    "processing_ms", "timings_ms", "metadata", "caption", "caption_model", "caption_device",
    "caption_runtime", "caption_status", "caption_error", "thumbnails", "links", "processed_by", "attempts",
}


SUMMARY_KEYS = {"id", "image_id", "filename", "status", "received_at", "error", "caption", "caption_status", "caption_error", "thumbnails", "links"}


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


# -- thumbnails ---------------------------------------------------------------------------------


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


def test_missing_thumbnail_file_is_404_not_500(tmp_path, database_url: str) -> None:
    config = config_for(tmp_path, database={"url": database_url})
    from tests.api.conftest import ingest

    ingest(config, ("hopper.jpg",))
    row = read_images(config)[0]
    (config.data_dir / row["thumb_small_path"]).unlink()
    with serve(config) as client:
        response = client.get(f"/api/images/{row['id']}/thumbnails/small")
    assert response.status_code == 404 and "error" in response.json()


def test_a_done_image_without_thumbnails_is_404_not_409(tmp_path, database_url: str) -> None:
    config = config_for(tmp_path, database={"url": database_url})
    from tests.api.conftest import ingest

    ingest(config, ("hopper.jpg",))
    row = read_images(config)[0]
    engine = make_engine(config.database_url)
    with engine.begin() as connection:
        connection.execute(update(ImageRow.__table__).values(thumb_small_path=None))
    engine.dispose()
    with serve(config) as client:
        response = client.get(f"/api/images/{row['id']}/thumbnails/small")
    assert (response.status_code, response.json()) == (404, {"error": "This image has no thumbnails."})
    assert "retry-after" not in response.headers


# -- stats --------------------------------------------------------------------------------------


def _nearest_rank(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


def test_stats_match_the_records(library: Library, library_client) -> None:
    rows = read_images(library.config)
    stats = library_client.get("/api/stats").json()
    done = [row for row in rows if row["status"] == "done"]
    assert stats["total"] == len(rows) == 6
    assert stats["by_status"] == {"pending": 1, "processing": 0, "done": 4, "failed": 1}
    assert stats["finished"] == 5 and stats["queue_depth"] == 1
    assert stats["success_rate"] == 0.8 and stats["failure_rate"] == 0.2
    times = [row["processing_ms"] for row in done]
    # To 0.1 ms, rounded: within 0.05 ms of the exact figure.
    assert stats["processing_ms"]["average"] == pytest.approx(sum(times) / len(times), abs=0.05 + 1e-9)
    assert stats["processing_ms"]["p50"] == pytest.approx(_nearest_rank(times, 50), abs=0.05 + 1e-9)
    assert stats["processing_ms"]["p95"] == pytest.approx(_nearest_rank(times, 95), abs=0.05 + 1e-9)
    metadata_ms = [row["metadata_ms"] for row in done]
    assert stats["stage_average_ms"]["metadata"] == pytest.approx(sum(metadata_ms) / len(metadata_ms), abs=0.05 + 1e-9)
    assert stats["processing_ms"]["average"] == round(stats["processing_ms"]["average"], 1)
    assert stats["stage_average_ms"]["caption"] == 0.0  # caption.model = "none"
    assert stats["last_hour"]["processed"] == 5
    assert stats["caption"] == {
        "model": None,
        "device": None,
        "runtime": None,
        "available": False,
        "reason": 'caption.model is "none"',
        "fix": "set caption.model to a hub id or a model folder",
        "waiting": 4,  # the done images, none captioned
    }


def test_stats_of_an_empty_database_are_zeros(tmp_path, database_url: str) -> None:
    config = config_for(tmp_path, database={"url": database_url})
    config.data_dir.mkdir(parents=True)
    engine = make_engine(config.database_url)
    migrate.upgrade(engine)
    engine.dispose()
    with serve(config) as client:
        response = client.get("/api/stats")
    assert response.status_code == 200
    stats = response.json()
    assert stats["total"] == stats["finished"] == stats["queue_depth"] == 0
    assert stats["success_rate"] == stats["failure_rate"] == 0.0
    assert stats["processing_ms"] == {"average": 0.0, "p50": 0.0, "p95": 0.0}
    assert set(stats["stage_average_ms"].values()) == {0.0}


def test_stats_follow_new_writes_at_once(tmp_path, database_url: str) -> None:
    """The cached answer is dropped as soon as another connection commits."""
    config = config_for(tmp_path, database={"url": database_url})
    insert_pending(config, "a" * 64)
    with serve(config) as client:
        assert client.get("/api/stats").json()["total"] == 1
        assert client.get("/api/stats").json()["total"] == 1
        insert_pending(config, "b" * 64)
        assert client.get("/api/stats").json()["total"] == 2


def test_stats_are_computed_once_while_nothing_changes(tmp_path, database_url: str, monkeypatch) -> None:
    """Requests with no write in between share one computation (PostgreSQL too: its snapshot
    says nothing was written); a write, or the one-second age, makes a new one."""
    config = config_for(tmp_path, database={"url": database_url})
    insert_pending(config, "a" * 64)
    computed = []
    real = queries.stats

    def counted(connection, **kwargs):
        computed.append(1)
        return real(connection, **kwargs)

    monkeypatch.setattr(queries, "stats", counted)
    with serve(config) as client:
        for _ in range(5):
            assert client.get("/api/stats").json()["total"] == 1
        assert len(computed) == 1
        insert_pending(config, "b" * 64)
        assert client.get("/api/stats").json()["total"] == 2
        assert client.get("/api/stats").json()["total"] == 2
        assert len(computed) == 2
        monkeypatch.setattr(routes, "STATS_MAX_AGE_S", 0.0)
        client.get("/api/stats")
        assert len(computed) == 3


def test_stats_percentiles_over_many_rows(tmp_path, database_url: str) -> None:
    """Nearest-rank p50/p95 read off the index agree with sorting in Python, odd and even sizes."""
    config = config_for(tmp_path, database={"url": database_url})
    config.data_dir.mkdir(parents=True)
    engine = make_engine(config.database_url)
    migrate.upgrade(engine)
    times = [((number * 7919) % 1000) / 10 for number in range(1, 202)]
    received = datetime(2026, 1, 1)
    with engine.begin() as connection:
        connection.execute(
            insert(ImageRow.__table__),
            [
                {"sha256": f"{number:064x}", "filename": f"{number}.jpg", "status": "done", "received_at": received,
                 "size_bytes": 1, "processing_ms": value, "hash_ms": 1.0}
                for number, value in enumerate(times)
            ],
        )
    with serve(config) as client:
        stats = client.get("/api/stats").json()
        assert stats["processing_ms"]["p50"] == pytest.approx(_nearest_rank(times, 50))
        assert stats["processing_ms"]["p95"] == pytest.approx(_nearest_rank(times, 95))
        assert stats["stage_average_ms"]["hash"] == 1.0
        # Every size from 1 up: the ranks are worked out in SQL, in integers.
        with engine.begin() as connection:
            connection.execute(delete(ImageRow.__table__))
        for size in range(1, 42):
            with engine.begin() as connection:
                connection.execute(
                    insert(ImageRow.__table__).values(
                        sha256=f"{10**6 + size:064x}", filename=f"s{size}.jpg", status="done", received_at=received,
                        size_bytes=1, processing_ms=times[size], hash_ms=1.0,
                    )
                )
            stats = client.get("/api/stats").json()
            assert stats["processing_ms"]["p50"] == pytest.approx(_nearest_rank(times[1 : size + 1], 50)), size
            assert stats["processing_ms"]["p95"] == pytest.approx(_nearest_rank(times[1 : size + 1], 95)), size
    engine.dispose()


def test_ping(library_client) -> None:
    assert library_client.get("/api/ping").json() == {"ok": True}


def test_stats_say_why_there_are_no_captions_and_how_many_wait(make_config, start_daemon, tmp_path: Path) -> None:
    from models.caption_state import FIX as CAPTION_FIX

    config = make_config(caption={"model": str(tmp_path / "no-model-here")})
    daemon = start_daemon(config)
    config.inbox_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CORPUS_DIR / "hopper.jpg", config.inbox_dir / "hopper.jpg")
    row = wait_for(lambda: next(iter(finished(read_images(config))), None), what="the image done")
    assert row["caption"] is None and row["caption_error"]
    wait_for(lambda: (daemon.caption_status or "").startswith("unavailable"), what="the model found missing")
    daemon.heartbeat()
    with serve(config) as client:
        caption = client.get("/api/stats").json()["caption"]
    assert caption["available"] is False and caption["waiting"] == 1
    assert caption["reason"] == "model not installed (folder not found)"
    assert caption["fix"] == CAPTION_FIX


def test_stats_and_htx_stats_say_the_model_is_being_prepared_never_off(make_config, start_daemon, tmp_path: Path, capsys) -> None:
    from daemon import cli

    gated = GatedCaptioner()
    config = make_config(caption={"model": "./gated"})
    daemon = start_daemon(config, captioner=gated)
    try:
        wait_for(lambda: (daemon.caption_status or "").startswith("preparing"), what="the model being prepared")
        daemon.heartbeat()
        with serve(config) as client:
            caption = client.get("/api/stats").json()["caption"]
        assert (caption["available"], caption["reason"], caption["fix"]) == (False, PREPARING, None)
        assert cli.main(["--config", str(write_config_file(config, tmp_path / "htx.toml")), "stats"]) == cli.EXIT_OK
        [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("captions ")]
        assert line.split(None, 1)[1] == PREPARING
    finally:
        gated.gate.set()
