"""GET /api/images?order=taken (newest capture first) and lists of statuses, over a database
the real daemon made from corpus files with and without EXIF capture times, plus rows written
by hand; the query plans at a few thousand rows."""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, text

from models import image_reads, migrate
from models.config import Config
from models.db import make_engine
from models.tables import Image as ImageRow
from models.tables import sort_key
from tests.api.conftest import config_for, ingest, insert_pending, serve
from tests.conftest import new_database_url
from tests.helpers import read_images

pytestmark = pytest.mark.both_backends

# Capture times (DateTimeOriginal, or DateTime): flower.jpg 2003-12-14, exif_gps.jpg 2099-09-29
# (a camera clock set wrong), pil_sample_rgb.jpg 2009-03-06; ultrahdr.jpg has one (2024) but
# fails (truncated), so it goes by its arrival; hopper.jpg and basn6a08.png have none.
FILES = ("flower.jpg", "exif_gps.jpg", "pil_sample_rgb.jpg", "ultrahdr.jpg", "hopper.jpg", "basn6a08.png", "broken.png")
TIED = "2010-05-05T05:05:05"


@dataclass(frozen=True)
class Taken:
    config: Config
    rows: list[dict[str, Any]]


def _made_up(number: int, **values: Any) -> dict[str, Any]:
    return {"sha256": f"{number:064x}", "filename": f"made-up-{number}.jpg", "size_bytes": 1, "taken_at": None} | values


@pytest.fixture(scope="module")
def taken(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, backend: str) -> Taken:
    config = config_for(tmp_path_factory.mktemp("taken"), database={"url": new_database_url(request)})
    ingest(config, FILES)
    insert_pending(config, "f" * 64)
    engine = make_engine(config.database_url)
    with engine.begin() as connection:
        connection.execute(insert(ImageRow.__table__), [
            # Three taken at the same second: newest id first among them.
            *(_made_up(n, status="done", received_at=datetime(2025, 1, 1), taken_at=TIED) for n in (1, 2, 3)),
            # Arrived long ago, no capture time: last.
            _made_up(4, status="done", received_at=datetime(2001, 1, 1, 0, 0, 0, 999999)),
            _made_up(5, status="processing", received_at=datetime(2002, 1, 1)),
            _made_up(6, status="failed", received_at=datetime(2000, 6, 1), error="internal error", error_kind="internal"),
        ])
    engine.dispose()
    return Taken(config, read_images(config))


def _key(row: dict[str, Any]) -> tuple[str, int]:
    return (row["taken_at"] or row["received_at"].isoformat(timespec="seconds"), row["id"])


def _expected(rows: list[dict[str, Any]], statuses: tuple[str, ...] | None = None) -> list[int]:
    kept = [row for row in rows if statuses is None or row["status"] in statuses]
    return [row["id"] for row in sorted(kept, key=_key, reverse=True)]


def _pages(client, **params: Any) -> list[int]:
    """Every page of the list, `limit` 2, followed by next_cursor; the ids in order."""
    seen, cursor = [], None
    while True:
        page = client.get("/api/images", params={"limit": 2, **params} | ({"cursor": cursor} if cursor else {})).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def test_the_daemon_keys_each_image_by_when_it_was_taken(taken: Taken) -> None:
    by_name = {row["filename"]: row for row in taken.rows}
    assert by_name["flower.jpg"]["sort_taken"] == by_name["flower.jpg"]["taken_at"] == "2003-12-14T12:01:44"
    assert by_name["exif_gps.jpg"]["sort_taken"] == "2099-09-29T10:10:10"
    for name in ("hopper.jpg", "basn6a08.png", "broken.png", "ultrahdr.jpg", "waiting.jpg"):
        row = by_name[name]
        assert row["sort_taken"] == row["received_at"].isoformat(timespec="seconds"), name
    assert by_name["ultrahdr.jpg"]["status"] == "failed"
    for row in taken.rows:
        assert (row["sort_taken"], row["id"]) == _key(row), row["filename"]


def test_order_taken_is_newest_capture_first_in_keyset_pages(taken: Taken) -> None:
    expected = _expected(taken.rows)
    names = {row["id"]: row["filename"] for row in taken.rows}
    assert names[expected[0]] == "exif_gps.jpg"  # 2099
    assert [names[image_id] for image_id in expected[-3:]] == ["made-up-5.jpg", "made-up-4.jpg", "made-up-6.jpg"]
    tied = [image_id for image_id in expected if names[image_id] in ("made-up-1.jpg", "made-up-2.jpg", "made-up-3.jpg")]
    assert tied == sorted(tied, reverse=True)
    with serve(taken.config) as client:
        assert _pages(client, order="taken") == expected
        whole = client.get("/api/images", params={"order": "taken"}).json()
        assert [item["id"] for item in whole["items"]] == expected and whole["next_cursor"] is None
        # The default order is unchanged: by id, newest first.
        assert _pages(client) == _pages(client, order="received") == sorted(names, reverse=True)


@pytest.mark.parametrize(
    "statuses",
    [("done",), ("failed",), ("pending", "processing", "done"), ("done", "failed"), ("pending", "processing", "done", "failed")],
)
def test_statuses_filter_both_orders(taken: Taken, statuses: tuple[str, ...]) -> None:
    by_id = sorted((row["id"] for row in taken.rows if row["status"] in statuses), reverse=True)
    with serve(taken.config) as client:
        assert _pages(client, status=",".join(statuses)) == by_id
        assert _pages(client, status=",".join(statuses), order="taken") == _expected(taken.rows, statuses)
        # Named twice, in another order, or as the parameter given again: the same list.
        assert _pages(client, status=",".join(reversed(statuses + statuses[:1]))) == by_id
        assert _pages(client, status=list(statuses), order="taken") == _expected(taken.rows, statuses)


def test_order_taken_combines_with_sha256(taken: Taken) -> None:
    row = next(row for row in taken.rows if row["filename"] == "flower.jpg")
    with serve(taken.config) as client:
        for params in ({"sha256": row["sha256"]}, {"sha256": row["sha256"], "status": "done,failed"}):
            found = client.get("/api/images", params={"order": "taken", **params}).json()["items"]
            assert [item["id"] for item in found] == [row["id"]]
        assert client.get("/api/images", params={"order": "taken", "sha256": row["sha256"], "status": "failed"}).json()["items"] == []


def test_a_cursor_goes_with_its_own_order(taken: Taken) -> None:
    with serve(taken.config) as client:
        received = client.get("/api/images", params={"limit": 2}).json()["next_cursor"]
        by_taken = client.get("/api/images", params={"limit": 2, "order": "taken"}).json()["next_cursor"]
        assert base64.urlsafe_b64decode(received + "==").decode().startswith("before:")  # as old clients have it
        for order, cursor, made_for in (("taken", received, "received"), ("received", by_taken, "taken")):
            response = client.get("/api/images", params={"order": order, "cursor": cursor})
            assert response.status_code == 400
            assert response.json()["error"].startswith(f"cursor was made for order={made_for}, not order={order}")
        # Without `order`, a cursor of order=taken is refused the same way.
        assert client.get("/api/images", params={"cursor": by_taken}).status_code == 400


@pytest.mark.parametrize(
    "params, words",
    [
        ({"order": "taken", "q": "flower"}, "order=taken cannot be combined with q"),
        ({"order": "shot"}, "order must be received"),
        ({"order": ""}, "order must be received"),
        ({"status": "done,lost"}, "status must be one of"),
        ({"status": "done,"}, "status must be one of"),
        ({"status": ""}, "status must be one of"),
        ({"order": "taken", "cursor": base64.urlsafe_b64encode(b"taken:5:yesterday").decode()}, "cursor is not valid"),
        ({"order": "taken", "cursor": base64.urlsafe_b64encode(b"taken:x:2020-01-01T00:00:00").decode()}, "cursor is not valid"),
    ],
)
def test_bad_orders_statuses_and_cursors_are_400(taken: Taken, params: dict[str, str], words: str) -> None:
    with serve(taken.config) as client:
        response = client.get("/api/images", params=params)
    assert response.status_code == 400 and response.json()["error"].startswith(words)


def test_statuses_combine_with_a_search(taken: Taken) -> None:
    with serve(taken.config) as client:
        found = client.get("/api/images", params={"q": "made", "status": "processing,failed"}).json()["items"]
        assert [item["filename"] for item in found] == ["made-up-6.jpg", "made-up-5.jpg"]
        found = client.get("/api/images", params={"q": "made", "status": "done"}).json()["items"]
        assert [item["filename"] for item in found] == ["made-up-4.jpg", "made-up-3.jpg", "made-up-2.jpg", "made-up-1.jpg"]
        # "q" of spaces only is no search: order=taken takes it.
        assert client.get("/api/images", params={"q": "  ", "order": "taken"}).status_code == 200


# -- at scale: the plans ------------------------------------------------------------------------

SCALE_ROWS = 3000


@pytest.fixture(scope="module")
def many(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend: str) -> str:
    """A database of SCALE_ROWS rows written by hand (made up, as a busy library's mix), with
    the planner's statistics."""
    url = new_database_url(request) or f"sqlite:///{tmp_path_factory.mktemp('many') / 'htx.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    rng = random.Random(12)
    rows = []
    for number in range(SCALE_ROWS):
        status = rng.choices(("done", "failed", "pending", "processing"), (90, 6, 3, 1))[0]
        taken_at = None
        if status == "done" and rng.random() < 0.8:
            # Seconds of a few days: many ties, each broken by id.
            taken_at = (datetime(2020, 1, 1) + timedelta(seconds=rng.randrange(300))).isoformat()
        rows.append(_made_up(number, status=status, received_at=datetime(2020, 1, 1) + timedelta(seconds=number // 3), taken_at=taken_at))
    with engine.begin() as connection:
        connection.execute(insert(ImageRow.__table__), rows)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE")
    engine.dispose()
    return url


def _plan(connection, statement, parameters: dict[str, Any]) -> str:
    compiled = statement.compile(dialect=connection.dialect)
    values = compiled.params | parameters
    if connection.dialect.name == "sqlite":
        cursor = connection.connection.driver_connection.execute(
            "EXPLAIN QUERY PLAN " + str(compiled), [values[name] for name in compiled.positiontup]
        )
        return "\n".join(row[3] for row in cursor)
    return "\n".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + str(compiled), values))


def test_each_page_is_a_range_of_an_index(many: str) -> None:
    engine = make_engine(many, readonly=True)
    cursor = {"before_key": "2020-01-01T00:02:00", "before_id": 2000, "limit": 51}
    three = {"status_0": "pending", "status_1": "processing", "status_2": "done"}
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            unsorted = "TEMP B-TREE" if sqlite else "Sort"
            plan = _plan(connection, image_reads._taken_statement(True, 0, False), cursor)
            assert "ix_images_sort_taken" in plan and unsorted not in plan, plan
            plan = _plan(connection, image_reads._taken_statement(True, 1, False), cursor | {"status_0": "done"})
            assert "ix_images_status_sort_taken" in plan and unsorted not in plan, plan
            for taken, index in ((True, "ix_images_status_sort_taken"), (False, "ix_images_status_id")):
                plan = _plan(connection, image_reads._statuses_statement(taken, True, 3, False), cursor | three)
                if sqlite:
                    # One range per status; what is sorted is a page per status, for the merge.
                    assert plan.count(f"COVERING INDEX {index} (status=? AND") == 3 and "SCAN images" not in plan, plan
                else:
                    # Merged in order, a page at most of each status: PostgreSQL picks each
                    # one's index by its statistics (at this size, the key for the many done
                    # ones, and reads the page's 50 rows by a hash of the table; the plans at
                    # 100,000 rows are in bench/api.py's report).
                    assert "Merge Append" in plan and plan.count("Limit") >= 4, plan
    finally:
        engine.dispose()


def test_pages_at_scale_match_the_order(many: str) -> None:
    engine = make_engine(many, readonly=True)
    try:
        with engine.connect() as connection:
            query = text("SELECT id, status, taken_at, received_at, sort_taken FROM images")
            rows = [dict(row) for row in connection.execute(query).mappings()]
            for row in rows:
                if isinstance(row["received_at"], str):  # SQLite's text, read without the column's type
                    row["received_at"] = datetime.fromisoformat(row["received_at"])
                assert row["sort_taken"] == sort_key(row["received_at"], row["taken_at"])
            for statuses in (None, ("done",), ("pending", "processing", "done")):
                seen, before = [], {}
                while True:
                    page = image_reads.list_images(connection, limit=200, status=statuses, order="taken", **before)
                    seen += [item["id"] for item in page.items]
                    if page.next_before_id is None:
                        break
                    before = {"before_id": page.next_before_id, "before_key": page.next_key}
                assert seen == _expected(rows, statuses)
    finally:
        engine.dispose()
