"""Processing statistics (/api/stats, htx stats): counts and sums kept by triggers, percentiles
read off an index, and the daemon processes at work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, func, select

from models.reads import daemon_state, image_totals, images
from models.status_reads import DaemonStatus, daemon_status, daemon_status_of
from models.tables import STATUSES

STAGES = ("hash", "metadata", "thumbnails", "caption")

_TOTALS = select(image_totals)
_DONE_MS = images.c.processing_ms
# How many done images have a time, as image_totals says, in the statement that reads the
# percentiles: the ranks and the index they are read from then come from one snapshot, even
# where each statement is a transaction of its own (the API's PostgreSQL reader).
_TIMED = func.coalesce(
    select(image_totals.c.n_processing).where(image_totals.c.status == "done").scalar_subquery(), 0
)


def _percentile(percent: int) -> Any:
    """Nearest-rank percentile of the done images' processing_ms, read off the index as a
    scalar subquery: the value at rank ceil(percent / 100 * n), in integers.

    OFFSET walks the index, so the high percentiles are read from the top end: p95 of 100,000
    rows steps over 5,000 entries, not 95,000. (Division truncates toward zero on both
    databases, so no offset is negative, even for n = 0: the subquery is then NULL.)
    """
    times = select(_DONE_MS).where(images.c.status == "done", _DONE_MS.is_not(None)).limit(1)
    if percent <= 50:  # rank - 1 = ceil(p n / 100) - 1 = floor((p n - 1) / 100)
        return times.order_by(_DONE_MS.asc()).offset((percent * _TIMED - 1) // 100).scalar_subquery()
    # n - rank, counted from the top
    return times.order_by(_DONE_MS.desc()).offset(_TIMED - (percent * _TIMED + 99) // 100).scalar_subquery()


_PERCENTILES = select(_percentile(50), _percentile(95))
_PROCESSED_SINCE = select(func.count()).where(images.c.processed_at >= bindparam("since"))


@dataclass(frozen=True)
class Worker:
    """A daemon process, as /api/stats lists it."""

    id: int
    name: str  # host:pid, as records' processed_by say
    roles: str | None
    status: DaemonStatus
    holding: int  # images it has claimed right now
    processed_last_hour: int
    caption_batches: str | None = None  # what it has captioned, as models.caption_batches' JSON


# Workers shown: those not stopped that were heard from within this long.
WORKERS_SHOWN_S = 3600


def workers(connection: Connection, *, now: datetime) -> list[Worker]:
    """The daemon processes alive or lately heard from, with what each holds and has done."""
    since = now - timedelta(seconds=WORKERS_SHOWN_S)
    rows = connection.execute(
        select(daemon_state)
        .where(daemon_state.c.stopped_at.is_(None), daemon_state.c.heartbeat_at >= since)
        .order_by(daemon_state.c.id)
    ).mappings().all()
    if not rows:
        return []
    holding = dict(
        connection.execute(
            select(images.c.claimed_by, func.count()).where(images.c.status == "processing").group_by(images.c.claimed_by)
        ).all()
    )
    processed = dict(
        connection.execute(
            select(images.c.processed_by, func.count())
            .where(images.c.processed_at >= now - timedelta(hours=1))
            .group_by(images.c.processed_by)
        ).all()
    )
    found = []
    for row in rows:
        name = f"{row['host']}:{row['pid']}"
        found.append(
            Worker(
                row["id"],
                name,
                row["roles"],
                daemon_status_of(row),
                holding.get(row["id"], 0),
                processed.get(name, 0),
                row["caption_batches"],
            )
        )
    return found


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
    caption_runtime: str | None
    problem: str | None = None  # what the daemon is waiting out, as it last said
    workers: tuple[Worker, ...] = ()
    caption_status: str | None = None  # the daemon's: "loading", "ready (...)", "unavailable: <reason>"
    uncaptioned: int = 0  # done images the model never ran on (missing, failed): recaption --missing's

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


def status_totals(connection: Connection) -> tuple[dict[str, int], dict[str, RowMapping]]:
    """Images by status (every status, zeros included), and the `image_totals` row of each."""
    by_status = dict.fromkeys(STATUSES, 0)
    totals: dict[str, RowMapping] = {}
    for row in connection.execute(_TOTALS).mappings():
        totals[row["status"]] = row
        by_status[row["status"]] = row["images"]
    return by_status, totals


def stats(connection: Connection, *, now: datetime) -> Stats:
    """Counts, timings and throughput; zeros for an empty database. `now` is naive UTC.

    Counts and sums come from `image_totals` (kept by triggers); the percentiles and the last
    hour's count are index range reads. Nothing here reads the images table row by row.
    """
    by_status, totals = status_totals(connection)
    done = totals.get("done")
    p50, p95 = connection.execute(_PERCENTILES).one() if done and done["n_processing"] else (None, None)
    state = daemon_status(connection)
    return Stats(
        by_status=by_status,
        average_ms=_average(done, "processing"),
        p50_ms=float(p50 or 0.0),
        p95_ms=float(p95 or 0.0),
        stage_average_ms={stage: _average(done, stage) for stage in STAGES},
        processed_last_hour=connection.execute(_PROCESSED_SINCE, {"since": now - timedelta(hours=1)}).scalar_one(),
        caption_model=state.caption_model if state else None,
        caption_device=state.caption_device if state else None,
        caption_runtime=state.caption_runtime if state else None,
        problem=state.problem if state and state.stopped_at is None else None,
        workers=tuple(workers(connection, now=now)),
        caption_status=state.caption_status if state and state.stopped_at is None else None,
        uncaptioned=(done["images"] - done["n_caption"]) if done else 0,
    )

