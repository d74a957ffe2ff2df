"""The work queue, which is the images table: claims with leases, on SQLite and PostgreSQL.

A worker (a daemon process, its daemon_state row) claims pending images with one atomic
UPDATE that sets `processing`, `claimed_by` and `lease_until`. On PostgreSQL the rows are
picked with `FOR UPDATE SKIP LOCKED`, so any number of workers on any number of machines claim
at once without waiting on each other or taking the same row; on SQLite, whose daemon writes
through one thread, the same statement runs without that clause. The worker renews its
leases while it works and records an outcome only while it still holds the claim (`finish`).
A claim whose lease ran out (its worker died or hung) goes back to pending with `attempts`
raised; an image that reaches `max_attempts` (it kills every worker that touches it) is failed
with that reason instead of being tried for ever.

The caption stage has a queue of its own in the same table: images whose metadata and
thumbnails are recorded are `done` already, with `stage = 'caption'` saying their caption is
still to come (made by another worker, or once the model is ready). A claim of one sets
`processing` like any other; giving it back makes it `done` again, not `pending`.

Times are the workers' clocks (naive UTC, as stored): machines of a fleet keep them in step
with NTP, and leases are tens of seconds long.

On PostgreSQL, new work is announced with NOTIFY (daemon.database.work_signal listens), delivered when
the transaction that made it commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, or_, select, text, update

from daemon.database.records import KNOWN_COLUMNS, KnownImage, utcnow
from models.tables import DaemonState, Image

images = Image.__table__
daemon_state = DaemonState.__table__

CHANNEL = "htx_work"
# Stages a claim is for: the whole pipeline (stage NULL in the row), or only the caption.
PREPARE = "prepare"
CAPTION = "caption"


@dataclass(frozen=True)
class Claim:
    """A claimed image: what a worker needs to find and process its bytes."""

    image: KnownImage
    stage: str
    source_identity: str | None
    processing_ms: float | None  # spent by an earlier stage (thumbnails, on another worker)


_CLAIM_COLUMNS = [
    *KNOWN_COLUMNS,
    images.c.stage,
    images.c.source_identity,
    images.c.processing_ms,
]


def waiting(stage: str) -> Any:
    """The condition of an image waiting for `stage`: pending for the pipeline; done, with
    its caption to come, for the caption stage."""
    if stage == PREPARE:
        return and_(images.c.status == "pending", images.c.stage.is_(None))
    return and_(images.c.status == "done", images.c.stage == stage)


# What a claim given back or lost becomes: waiting again for the stage it was claimed for.
_WAITING_AGAIN = case((images.c.stage == CAPTION, "done"), else_="pending")


def _claim_statement(stage: str | None) -> Any:
    """UPDATE ... RETURNING of a claim: of the oldest `:limit` pending images of `stage`, or
    (None) of the images `:ids`. Built once per kind: SQLAlchemy then reuses its compiled
    form and cache key, a third of a claim's cost in Python.

    The error of a failed image queued again stays until its outcome replaces it: if its
    original has gone meanwhile, that first reason is still the one."""
    if stage is None:
        chosen: Any = and_(images.c.id.in_(bindparam("ids", expanding=True)), or_(waiting(PREPARE), waiting(CAPTION)))
    else:
        # A materialised CTE picks the rows once: as a plain IN (subquery), PostgreSQL may run
        # the subquery again while updating, and claim more rows than the limit.
        picked = (
            select(images.c.id)
            .where(waiting(stage))
            .order_by(images.c.id)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite renders no such clause
            .cte("chosen")
            .prefix_with("MATERIALIZED")
        )
        chosen = and_(images.c.id == picked.c.id, waiting(stage))
    return (
        update(images)
        .where(chosen)
        .values(
            status="processing",
            claimed_by=bindparam("worker_id"),
            lease_until=bindparam("lease_until"),
        )
        .returning(*_CLAIM_COLUMNS)
    )


_CLAIMS = {stage: _claim_statement(stage) for stage in (PREPARE, CAPTION, None)}


def _held(image_ids: Any) -> Any:
    """The condition of a write to claimed images: only while `:worker_id` holds them."""
    return and_(image_ids, images.c.claimed_by == bindparam("worker_id"), images.c.status == "processing")


# Built once, like the claims: the columns an outcome sets are the parameters of each call
# (an UPDATE sets the columns its parameters name besides those of `values`).
_FINISH = update(images).where(_held(images.c.id == bindparam("image_id"))).values(claimed_by=None, lease_until=None)
_DROP = delete(images).where(_held(images.c.id == bindparam("image_id")))
_RENEW = (
    update(images)
    .where(_held(images.c.id.in_(bindparam("image_ids", expanding=True))))
    .values(lease_until=bindparam("lease_until"))
)
_CLAIMED_BY = select(images.c.id).where(images.c.status == "processing", images.c.claimed_by == bindparam("worker_id"))
_RELEASE = (
    update(images)
    .where(_held(images.c.id.in_(bindparam("image_ids", expanding=True))))
    .values(status=_WAITING_AGAIN, claimed_by=None, lease_until=None)
)


def claim(connection: Connection, worker_id: int, *, stage: str, limit: int, lease_s: float) -> list[Claim]:
    """Claim up to `limit` pending images of `stage`, oldest first."""
    return _claimed(connection, _CLAIMS[stage], worker_id, lease_s, limit=limit)


def claim_ids(connection: Connection, worker_id: int, image_ids: Sequence[int], *, lease_s: float) -> list[Claim]:
    """Claim these images if they wait, whatever their stage (a tool processing one file now)."""
    return _claimed(connection, _CLAIMS[None], worker_id, lease_s, ids=list(image_ids))


def _claimed(connection: Connection, statement: Any, worker_id: int, lease_s: float, **parameters: Any) -> list[Claim]:
    lease_until = utcnow() + timedelta(seconds=lease_s)
    rows = connection.execute(statement, {"worker_id": worker_id, "lease_until": lease_until, **parameters}).all()
    return [
        Claim(KnownImage(*row[: len(KNOWN_COLUMNS)]), row.stage or PREPARE, row.source_identity, row.processing_ms)
        for row in sorted(rows, key=lambda row: row.id)
    ]


def renew(connection: Connection, worker_id: int, image_ids: Sequence[int], *, lease_s: float) -> int:
    """Extend the leases of `image_ids` that `worker_id` still holds; how many it holds.

    Only the claims its threads hold now, by id: a claim the process no longer holds (its
    thread forgot it) must lapse, or be put back, not be renewed for ever."""
    lease_until = utcnow() + timedelta(seconds=lease_s)
    return connection.execute(_RENEW, {"worker_id": worker_id, "image_ids": list(image_ids), "lease_until": lease_until}).rowcount


def claimed_by(connection: Connection, worker_id: int) -> list[int]:
    """The images the database says `worker_id` has claimed now."""
    return list(connection.execute(_CLAIMED_BY, {"worker_id": worker_id}).scalars())


def finish(connection: Connection, worker_id: int, image_id: int, values: dict[str, Any]) -> bool:
    """Write `values` (an outcome, or a hand-over to the next stage) if `worker_id` still holds
    the claim, and end the claim; False if it lost it (its lease ran out and another worker
    took the image), in which case nothing is written."""
    result = connection.execute(_FINISH, {**values, "image_id": image_id, "worker_id": worker_id})
    return result.rowcount == 1


def drop(connection: Connection, worker_id: int, image_id: int) -> bool:
    """Delete a claimed image whose bytes no longer exist (its inbox file was rewritten): the
    new bytes are registered as what they are. False if the claim was lost."""
    return connection.execute(_DROP, {"image_id": image_id, "worker_id": worker_id}).rowcount == 1


def release(connection: Connection, worker_id: int, image_ids: Sequence[int], values: dict[str, Any] | None = None) -> int:
    """Give claims back untouched (a stop, a fault of the environment): waiting again for their
    stage, with no attempt counted, and `values` (where the bytes are now)."""
    return connection.execute(_RELEASE, {**(values or {}), "image_ids": list(image_ids), "worker_id": worker_id}).rowcount


def requeue_lost(
    connection: Connection, *, max_attempts: int, dead_workers: Sequence[int] = (), lapsed: bool = True
) -> tuple[int, int]:
    """Claims whose worker is gone: those of `dead_workers` (known dead: a process of this host
    that no longer runs), `processing` rows nobody claims (an older daemon's), and, with
    `lapsed`, those whose lease ran out. Each goes back to pending with its attempt count
    raised, or is failed when that reaches `max_attempts`. Returns (requeued, failed).

    A caller that has just waited out a fault of the environment passes lapsed=False for a
    while: leases lapse during a database outage through no fault of their holders, who renew
    them once they reach the database again; an outage must not count as a failed attempt."""
    gone = [images.c.claimed_by.is_(None), images.c.claimed_by.in_(list(dead_workers))]
    if lapsed:
        gone.append(images.c.lease_until < utcnow())
    return _requeue(connection, and_(images.c.status == "processing", or_(*gone)), max_attempts)


def requeue_orphans(connection: Connection, worker_id: int, image_ids: Sequence[int], *, max_attempts: int) -> tuple[int, int]:
    """Claims of `worker_id` that none of its threads holds (a bug lost them): back to pending,
    with the attempt counted (the same bug may lose it again). Returns (requeued, failed)."""
    return _requeue(connection, _held(images.c.id.in_(list(image_ids))), max_attempts, {"worker_id": worker_id})


def _requeue(connection: Connection, lost: Any, max_attempts: int, parameters: dict[str, Any] | None = None) -> tuple[int, int]:
    ended = {"attempts": images.c.attempts + 1, "claimed_by": None, "lease_until": None, "processed_at": utcnow()}
    given_up = and_(lost, images.c.attempts + 1 >= max_attempts)
    tries = f"({max_attempts} tries)"
    failed = connection.execute(
        update(images)
        .where(given_up, or_(images.c.stage.is_(None), images.c.stage != CAPTION))
        .values(
            status="failed",
            error=f"every worker that processed this image stopped before it finished {tries}",
            error_kind="internal",
            **ended,
        ),
        parameters or {},
    ).rowcount
    # Its metadata and thumbnails are recorded: only the caption is given up on.
    connection.execute(
        update(images)
        .where(given_up, images.c.stage == CAPTION)
        .values(status="done", stage=None, caption_error=f"every worker that captioned this image stopped before it finished {tries}", **ended),
        parameters or {},
    )
    requeued = connection.execute(
        update(images).where(lost).values(status=_WAITING_AGAIN, attempts=images.c.attempts + 1, claimed_by=None, lease_until=None),
        parameters or {},
    ).rowcount
    if requeued:
        announce(connection)
    return requeued, failed


def announce(connection: Connection) -> None:
    """Tell listening workers there is work (PostgreSQL; delivered at commit)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"NOTIFY {CHANNEL}"))


def pending_count(connection: Connection, stages: Sequence[str], worker_id: int) -> int:
    """Images waiting for one of `stages`, plus those `worker_id` holds: 0 means nothing is
    left for this worker."""
    query = select(images.c.id).where(
        or_(
            *(waiting(stage) for stage in stages),
            and_(images.c.status == "processing", images.c.claimed_by == worker_id),
        )
    )
    return len(connection.execute(query.limit(1)).all())


def register_worker(connection: Connection, *, host: str, pid: int, roles: str, started_at: datetime) -> int:
    """A daemon_state row for a starting daemon process; its id is the worker id."""
    result = connection.execute(
        daemon_state.insert().values(host=host, pid=pid, roles=roles, started_at=started_at, heartbeat_at=utcnow())
    )
    return result.inserted_primary_key[0]


def local_workers(connection: Connection, host: str) -> list[tuple[int, int]]:
    """(worker id, pid) of this host's workers that have not stopped cleanly."""
    rows = connection.execute(
        select(daemon_state.c.id, daemon_state.c.pid).where(daemon_state.c.host == host, daemon_state.c.stopped_at.is_(None))
    ).all()
    return [(row.id, row.pid) for row in rows]


def mark_stopped(connection: Connection, worker_ids: Sequence[int]) -> None:
    """Workers found dead: shown as stopped, so readers stop counting them."""
    connection.execute(
        update(daemon_state).where(daemon_state.c.id.in_(list(worker_ids))).values(stopped_at=utcnow())
    )
