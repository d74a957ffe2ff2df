"""The read queries of the API. Every SQL statement the API runs is here; api/ holds none.

Each function takes an open connection (the API's is read-only) and returns plain values.
Statistics are SQL aggregates over indexes: no function here loads a table into Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, RowMapping, bindparam, func, select

from models.tables import STATUSES, DaemonState, Image, ImageTotals

images = Image.__table__
daemon_state = DaemonState.__table__
image_totals = ImageTotals.__table__

# Columns a client may see, plus the thumbnail paths the API needs to serve the files.
# `inbox_path` and `stored_path` are never read: a server path cannot leak from what was not read.
_RECORD_COLUMNS = [column for column in images.c if column.name not in ("inbox_path", "stored_path")]
_SUMMARY_COLUMNS = [images.c.id, images.c.filename, images.c.status, images.c.received_at, images.c.sha256]

# Built once: SQLAlchemy caches the compiled form of a statement object, and the detail route
# is the hot path.
_BY_ID = select(*_RECORD_COLUMNS).where(images.c.id == bindparam("image_id"))
_BY_SHA = select(*_RECORD_COLUMNS).where(images.c.sha256 == bindparam("sha256"))
_THUMBNAIL = select(
    images.c.id,
    images.c.status,
    images.c.sha256,
    images.c.thumb_small_path,
    images.c.thumb_small_width,
    images.c.thumb_small_height,
    images.c.thumb_medium_path,
    images.c.thumb_medium_width,
    images.c.thumb_medium_height,
).where(images.c.id == bindparam("image_id"))


def image_by_id(connection: Connection, image_id: int) -> RowMapping | None:
    """The record of one image (every column but the server paths of the original)."""
    return connection.execute(_BY_ID, {"image_id": image_id}).mappings().one_or_none()


def image_by_sha256(connection: Connection, sha256: str) -> RowMapping | None:
    return connection.execute(_BY_SHA, {"sha256": sha256}).mappings().one_or_none()


def thumbnail_info(connection: Connection, image_id: int) -> RowMapping | None:
    """Status, digest and thumbnail columns of one image."""
    return connection.execute(_THUMBNAIL, {"image_id": image_id}).mappings().one_or_none()


@dataclass(frozen=True)
class Page:
    items: list[RowMapping]
    next_before_id: int | None  # keyset cursor: the next page has ids below this one


def list_images(
    connection: Connection,
    *,
    limit: int,
    before_id: int | None = None,
    status: str | None = None,
    sha256: str | None = None,
) -> Page:
    """Newest first (by id, which grows with registration), `limit` per page, keyset paginated.

    With a status the (status, id) index serves both the filter and the order, so a page costs
    the same on the last page as on the first.
    """
    query = select(*_SUMMARY_COLUMNS).order_by(images.c.id.desc()).limit(limit + 1)
    if before_id is not None:
        query = query.where(images.c.id < before_id)
    if status is not None:
        query = query.where(images.c.status == status)
    if sha256 is not None:
        query = query.where(images.c.sha256 == sha256)
    rows = list(connection.execute(query).mappings())
    if len(rows) > limit:
        return Page(rows[:limit], rows[limit - 1]["id"])
    return Page(rows, None)


@dataclass(frozen=True)
class DaemonStatus:
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    caption_model: str | None
    caption_device: str | None
    caption_status: str | None


def daemon_status(connection: Connection) -> DaemonStatus | None:
    row = connection.execute(select(daemon_state).where(daemon_state.c.id == 1)).mappings().one_or_none()
    if row is None:
        return None
    return DaemonStatus(
        pid=row["pid"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
        caption_model=row["caption_model"],
        caption_device=row["caption_device"],
        caption_status=row["caption_status"],
    )


def schema_revision(connection: Connection) -> str | None:
    """The Alembic revision the database is at (None: not created yet)."""
    return MigrationContext.configure(connection).get_current_revision()


def health(connection: Connection) -> tuple[str | None, DaemonStatus | None]:
    """The schema revision and the daemon's last heartbeat (None before it first ran)."""
    revision = schema_revision(connection)
    return revision, (daemon_status(connection) if revision is not None else None)


# -- statistics -------------------------------------------------------------------------------

STAGES = ("hash", "metadata", "thumbnails", "caption")

_TOTALS = select(image_totals)
_DONE_MS = images.c.processing_ms
_RANKED_ASC = (
    select(_DONE_MS)
    .where(images.c.status == "done", _DONE_MS.is_not(None))
    .order_by(_DONE_MS.asc())
    .limit(1)
    .offset(bindparam("offset"))
)
_RANKED_DESC = (
    select(_DONE_MS)
    .where(images.c.status == "done", _DONE_MS.is_not(None))
    .order_by(_DONE_MS.desc())
    .limit(1)
    .offset(bindparam("offset"))
)
_PROCESSED_SINCE = select(func.count()).where(images.c.processed_at >= bindparam("since"))


@dataclass(frozen=True)
class Stats:
    by_status: dict[str, int]
    # Times are those of `done` images: a file rejected in a millisecond says nothing about
    # how long making a record takes.
    average_ms: float
    p50_ms: float
    p95_ms: float
    stage_average_ms: dict[str, float]
    processed_last_hour: int
    caption_model: str | None
    caption_device: str | None

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def finished(self) -> int:
        return self.by_status["done"] + self.by_status["failed"]

    @property
    def queue_depth(self) -> int:
        return self.by_status["pending"] + self.by_status["processing"]


def _average(totals: RowMapping | None, name: str) -> float:
    if totals is None or not totals[f"n_{name}"]:
        return 0.0
    return totals[f"s_{name}"] / totals[f"n_{name}"]


def _percentile(connection: Connection, count: int, percent: float) -> float:
    """Nearest-rank percentile of the done images' processing_ms, read off the index.

    OFFSET walks the index, so the high percentiles are read from the top end: p95 of 100,000
    rows steps over 5,000 entries, not 95,000.
    """
    if count == 0:
        return 0.0
    rank = max(1, math.ceil(percent / 100 * count))  # 1-based, ascending
    if rank <= count // 2:
        value = connection.execute(_RANKED_ASC, {"offset": rank - 1}).scalar_one_or_none()
    else:
        value = connection.execute(_RANKED_DESC, {"offset": count - rank}).scalar_one_or_none()
    return float(value or 0.0)


def stats(connection: Connection, *, now: datetime) -> Stats:
    """Counts, timings and throughput; zeros for an empty database. `now` is naive UTC.

    Counts and sums come from `image_totals` (kept by triggers); the percentiles and the last
    hour's count are index range reads. Nothing here reads the images table row by row.
    """
    by_status = dict.fromkeys(STATUSES, 0)
    totals: dict[str, RowMapping] = {}
    for row in connection.execute(_TOTALS).mappings():
        totals[row["status"]] = row
        by_status[row["status"]] = row["images"]
    done = totals.get("done")
    timed = done["n_processing"] if done else 0
    state = daemon_status(connection)
    return Stats(
        by_status=by_status,
        average_ms=_average(done, "processing"),
        p50_ms=_percentile(connection, timed, 50),
        p95_ms=_percentile(connection, timed, 95),
        stage_average_ms={stage: _average(done, stage) for stage in STAGES},
        processed_last_hour=connection.execute(_PROCESSED_SINCE, {"since": now - timedelta(hours=1)}).scalar_one(),
        caption_model=state.caption_model if state else None,
        caption_device=state.caption_device if state else None,
    )
