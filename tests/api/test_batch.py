"""POST /api/images/batch (api/batch.py): each id acted on as its own endpoint would, over
databases the real daemon made; and `can_reprocess`, per kind of failure."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import insert

from api.serialize import FINAL_ERROR_KINDS
from models.config import Config, replace
from models.db import make_engine
from models.tables import ERROR_KINDS
from models.tables import Image as ImageRow
from tests.api.conftest import ingest, insert_pending, serve
from tests.helpers import read_images

pytestmark = pytest.mark.both_backends

TOKEN = "batch-upload-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "/api/images/batch"


def _ids(config: Config) -> dict[str, int]:
    return {row["filename"]: row["id"] for row in read_images(config)}


def _statuses(config: Config) -> dict[int, str]:
    return {row["id"]: row["status"] for row in read_images(config)}


def test_delete_deletes_each_finished_image_and_says_why_not_for_the_others(make_config, tmp_path: Path) -> None:
    config = make_config(paths={"data_dir": "data", "trash": "trash"})
    ingest(config, ("hopper.jpg", "flower.jpg", "broken.png"))
    pending = insert_pending(config, "e" * 64)
    ids = _ids(config)
    rows = {row["id"]: row for row in read_images(config)}
    hopper, broken = ids["hopper.jpg"], ids["broken.png"]
    with serve(config) as client:
        not_yet = client.delete(f"/api/images/{pending}").json()["error"]  # the single endpoint's refusal

        response = client.post(URL, json={"action": "delete", "ids": [hopper, pending, 999999, broken]})

        assert response.status_code == 200
        assert response.json() == {
            "action": "delete",
            "results": [
                {"id": hopper, "status": 204},
                {"id": pending, "status": 409, "error": not_yet},
                {"id": 999999, "status": 404, "error": "No image with this id."},
                {"id": broken, "status": 204},
            ],
            "succeeded": 2,
            "failed": 2,
        }
        assert not_yet.startswith("The image is pending")
        assert client.get(f"/api/images/{hopper}").status_code == 404
        assert client.get("/api/stats").json()["total"] == 2
    assert _statuses(config) == {ids["flower.jpg"]: "done", pending: "pending"}
    for image_id in (hopper, broken):
        for key in ("stored_path", "thumb_small_path"):
            if rows[image_id][key]:
                assert not (config.data_dir / rows[image_id][key]).exists()
    # The trash keeps the originals, as a single delete does (and a failed one's note).
    kept = sorted(path.name for path in (tmp_path / "trash").iterdir())
    assert [name.split("-", 1)[0] for name in kept] == sorted([str(hopper), str(broken), str(broken)])


def test_a_fault_of_the_server_stops_the_deletes_and_answers_for_the_rest(make_config, tmp_path: Path) -> None:
    config = make_config(paths={"data_dir": "data", "trash": "trash"})
    ingest(config, ("hopper.jpg", "flower.jpg"))
    ids = _ids(config)
    (tmp_path / "trash").write_text("a file where the folder should be")
    with serve(config) as client:
        single = client.delete(f"/api/images/{ids['hopper.jpg']}")
        assert single.status_code == 503

        results = client.post(URL, json={"action": "delete", "ids": [ids["flower.jpg"], ids["hopper.jpg"]]}).json()["results"]

    assert results == [{"id": image_id, "status": 503, "error": single.json()["error"]} for image_id in (ids["flower.jpg"], ids["hopper.jpg"])]
    assert set(_statuses(config).values()) == {"done"}  # nothing deleted


def test_reprocess_queues_each_finished_image_and_says_why_not_for_the_others(make_config) -> None:
    config = make_config()
    ingest(config, ("hopper.jpg", "flower.jpg", "broken.png"))
    pending = insert_pending(config, "e" * 64)
    ids = _ids(config)
    flower = next(row for row in read_images(config) if row["filename"] == "flower.jpg")
    (config.data_dir / flower["stored_path"]).unlink()  # its original is gone
    order = [ids["hopper.jpg"], ids["broken.png"], pending, flower["id"], 424242]
    with serve(config) as client:
        singles = {image_id: client.post(f"/api/images/{image_id}/reprocess").json()["error"] for image_id in (pending, flower["id"])}

        body = client.post(URL, json={"action": "reprocess", "ids": order}).json()

    assert body == {
        "action": "reprocess",
        "results": [
            {"id": ids["hopper.jpg"], "status": 202},
            {"id": ids["broken.png"], "status": 202},  # failed as corrupt: allowed, if no help
            {"id": pending, "status": 409, "error": singles[pending]},
            {"id": flower["id"], "status": 409, "error": singles[flower["id"]]},
            {"id": 424242, "status": 404, "error": "No image with this id."},
        ],
        "succeeded": 2,
        "failed": 3,
    }
    assert "no longer stored" in singles[flower["id"]]
    statuses = _statuses(config)
    assert (statuses[ids["hopper.jpg"]], statuses[ids["broken.png"]], statuses[flower["id"]]) == ("pending", "pending", "done")


def test_recaption_queues_each_done_image_and_says_why_not_for_the_others(make_config) -> None:
    config = make_config()
    ingest(config, ("hopper.jpg", "broken.png"))
    pending = insert_pending(config, "e" * 64)
    ids = _ids(config)
    order = [ids["hopper.jpg"], ids["broken.png"], pending, 424242]
    with serve(config) as client:  # caption.model = "none"
        off = client.post(URL, json={"action": "recaption", "ids": order}).json()
        single = client.post(f"/api/images/{ids['hopper.jpg']}/recaption").json()["error"]
    assert off["results"] == [{"id": image_id, "status": 409, "error": single} for image_id in order]
    assert (off["succeeded"], off["failed"]) == (0, 4) and single.startswith("Captions are off")

    with serve(replace(config, caption={"model": "some/caption-model"})) as client:
        singles = {image_id: client.post(f"/api/images/{image_id}/recaption").json()["error"] for image_id in (ids["broken.png"], pending)}
        results = client.post(URL, json={"action": "recaption", "ids": order}).json()["results"]
    assert results == [
        {"id": ids["hopper.jpg"], "status": 202},
        {"id": ids["broken.png"], "status": 409, "error": singles[ids["broken.png"]]},
        {"id": pending, "status": 409, "error": singles[pending]},
        {"id": 424242, "status": 404, "error": "No image with this id."},
    ]
    assert next(row for row in read_images(config) if row["id"] == ids["hopper.jpg"])["stage"] == "caption"


def test_a_batch_needs_the_upload_token(make_config) -> None:
    config = make_config(api={"upload_token": TOKEN})
    ingest(config, ("hopper.jpg",))
    image_id = _ids(config)["hopper.jpg"]
    body = {"action": "delete", "ids": [image_id]}
    with serve(config) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = client.post(URL, json=body, headers=headers)
            assert response.status_code == 401, headers
            assert "Authorization: Bearer <token>" in response.json()["error"]
        assert client.post(URL, content=b"not even JSON").status_code == 401  # the token first
        assert client.get(f"/api/images/{image_id}").status_code == 200

        response = client.post(URL, json=body, headers=AUTH)

        assert response.status_code == 200 and response.json()["results"] == [{"id": image_id, "status": 204}]


@pytest.mark.parametrize(
    "body, words",
    [
        (b"", "The body must be JSON"),
        (b"delete 1 2", "The body must be JSON"),
        (b"[1, 2]", "The body must be JSON"),
        (b'{"action": "delete"}', "The body must be JSON"),
        (b'{"action": "delete", "ids": [1], "force": true}', "The body must be JSON"),
        (b'{"action": "move", "ids": [1]}', "action must be"),
        (b'{"action": null, "ids": [1]}', "action must be"),
        (b'{"action": "delete", "ids": []}', "ids must be a list of 1 to 500"),
        (b'{"action": "delete", "ids": 1}', "ids must be a list of 1 to 500"),
        (b'{"action": "delete", "ids": [' + b",".join(str(n).encode() for n in range(501)) + b"]}", "ids must be a list of 1 to 500"),
        (b'{"action": "delete", "ids": ["1"]}', "ids must be image ids"),
        (b'{"action": "delete", "ids": [1.0]}', "ids must be image ids"),
        (b'{"action": "delete", "ids": [true]}', "ids must be image ids"),
        (b'{"action": "delete", "ids": [-1]}', "ids must be image ids"),
        (b'{"action": "delete", "ids": [99999999999999999999]}', "ids must be image ids"),
        (b'{"action": "reprocess", "ids": [3, 4, 3]}', "ids must be distinct: 3 is given twice"),
    ],
)
def test_a_body_not_of_that_shape_is_400(config: Config, body: bytes, words: str) -> None:
    with serve(config) as client:
        response = client.post(URL, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(words)


def test_a_body_too_large_is_413_and_500_ids_are_taken(config: Config) -> None:
    ingest(config, ("hopper.jpg",))
    with serve(config) as client:
        response = client.post(URL, content=b'{"action": "delete", "ids": [1' + b" " * 70_000 + b"]}")
        assert response.status_code == 413
        # 500 ids (none of them an image but one), in one transaction each way.
        image_id = _ids(config)["hopper.jpg"]
        ids = [image_id, *range(10**6, 10**6 + 499)]
        body = client.post(URL, json={"action": "reprocess", "ids": ids}).json()
    assert body["results"][0] == {"id": image_id, "status": 202}
    assert [result["id"] for result in body["results"]] == ids
    assert (body["succeeded"], body["failed"]) == (1, 499)


def test_the_batch_is_documented(config: Config) -> None:
    with serve(config) as client:
        operation = client.get("/api/openapi.json").json()["paths"]["/api/images/batch"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401"}
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["action"]["enum"] == ["delete", "reprocess", "recaption"]


# -- can_reprocess -------------------------------------------------------------------------------


def test_can_reprocess_is_true_only_where_processing_again_can_change_the_outcome(make_config) -> None:
    # Every kind of failure is decided: a new one must be put on one side or the other.
    assert FINAL_ERROR_KINDS < set(ERROR_KINDS) and set(ERROR_KINDS) - FINAL_ERROR_KINDS == {"internal"}
    config = make_config()
    ingest(config, ("hopper.jpg", "broken.png"))
    pending = insert_pending(config, "e" * 64)
    engine = make_engine(config.database_url)
    with engine.begin() as connection:
        connection.execute(insert(ImageRow.__table__), [
            {"sha256": f"{number:064x}", "filename": f"{kind}.jpg", "status": "failed", "received_at": datetime(2026, 1, 1),
             "size_bytes": 1, "error": f"failed: {kind}", "error_kind": None if kind == "none" else kind}
            for number, kind in enumerate((*ERROR_KINDS, "none", "a_newer_kind"), start=1)
        ])
        connection.execute(insert(ImageRow.__table__).values(
            sha256="d" * 64, filename="processing.jpg", status="processing", received_at=datetime(2026, 1, 1), size_bytes=1))
    engine.dispose()
    expected = {
        "hopper.jpg": True, "broken.png": False, "waiting.jpg": False, "processing.jpg": False,
        "unsupported.jpg": False, "corrupt.jpg": False, "too_large.jpg": False, "missing.jpg": False,
        "internal.jpg": True, "none.jpg": True, "a_newer_kind.jpg": True,
    }
    with serve(config) as client:
        items = client.get("/api/images").json()["items"]
        assert {item["filename"]: item["can_reprocess"] for item in items} == expected
        for item in items:
            detail = client.get(f"/api/images/{item['id']}").json()
            assert detail["can_reprocess"] == item["can_reprocess"], item["filename"]
            assert detail["error"] == item["error"]  # the words stay as they were, and the code beside them
        assert client.get(f"/api/images/{pending}").json()["error_kind"] is None
