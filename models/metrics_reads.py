"""What /metrics reports: images by status and by what they wait for, and histograms of the
done images' durations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, case, func, or_, select

from models.reads import images
from models.stats_reads import STAGES, Worker, status_totals, workers

DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class Durations:
    """A histogram of durations: how many are at most each of DURATION_BUCKETS_S, cumulative."""

    buckets: tuple[int, ...]
    count: int
    sum_s: float


@dataclass(frozen=True)
class Metrics:
    by_status: dict[str, int]
    waiting: dict[str, int]  # pending images by what they wait for: "prepare" or "caption"
    durations: dict[str, Durations]  # "processing" and each of STAGES, over done images
    workers: list[Worker]


def _durations_of_done(connection: Connection) -> dict[str, Durations]:
    """One pass over the done images: a count per bucket for every timed column."""
    names = ("processing", *STAGES)
    columns = []
    for name in names:
        timed = images.c[f"{name}_ms"]
        columns += [func.count(timed), func.coalesce(func.sum(timed), 0.0)]
        columns += [func.coalesce(func.sum(case((timed <= bound * 1000, 1), else_=0)), 0) for bound in DURATION_BUCKETS_S]
    row = connection.execute(select(*columns).where(images.c.status == "done")).one()
    width = 2 + len(DURATION_BUCKETS_S)
    found = {}
    for index, name in enumerate(names):
        count, total_ms, *buckets = row[index * width : (index + 1) * width]
        found[name] = Durations(tuple(int(n) for n in buckets), int(count), float(total_ms) / 1000)
    return found


def metrics(connection: Connection, *, now: datetime) -> Metrics:
    """What /metrics reports. Unlike `stats`, this reads every done image (the histograms):
    tens of milliseconds at 100,000 images, for a scrape every few seconds at most."""
    by_status, _ = status_totals(connection)
    waiting = {"prepare": 0, "caption": 0}
    # The caption stage's images are done already, their caption still to come.
    queued = (
        select(images.c.stage, func.count())
        .where(or_(and_(images.c.status == "pending", images.c.stage.is_(None)), and_(images.c.status == "done", images.c.stage == "caption")))
        .group_by(images.c.stage)
    )
    for stage, count in connection.execute(queued):
        waiting[stage or "prepare"] = count
    return Metrics(by_status, waiting, _durations_of_done(connection), workers(connection, now=now))
