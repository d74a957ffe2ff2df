"""The watch lease: which daemon watches the inbox, for as long as it keeps renewing.

A lock held by a session (an advisory lock, an flock) outlives a holder that is frozen
(SIGSTOP, a hung machine): the inbox would be no one's. The lease lapses unless its holder's
watch thread renews it, and a standby takes it then; the lapsed holder cannot register a file
afterwards (insert_if_watching checks the holder in the transaction of the insert).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, or_, select, update

from daemon.database.records import insert_pending, utcnow
from models.tables import DaemonState, WatchLease

watch_lease = WatchLease.__table__
daemon_state = DaemonState.__table__
LEASE_ID = 1


def acquire(connection: Connection, worker_id: int, *, lease_s: float) -> bool:
    """Take (or renew) the lease if it is free, this worker's, lapsed, or its holder is known to
    have stopped (a process of this machine found dead at start: no wait for its lease after
    a crash and a restart); whether it is held."""
    now = utcnow()
    stopped = select(daemon_state.c.id).where(daemon_state.c.stopped_at.is_not(None))
    result = connection.execute(
        update(watch_lease)
        .where(
            watch_lease.c.id == LEASE_ID,
            or_(
                watch_lease.c.holder.is_(None),
                watch_lease.c.holder == worker_id,
                watch_lease.c.lease_until < now,
                watch_lease.c.holder.in_(stopped),
            ),
        )
        .values(holder=worker_id, lease_until=now + timedelta(seconds=lease_s))
    )
    return result.rowcount == 1


def renew(connection: Connection, worker_id: int, *, lease_s: float) -> bool:
    """Extend the lease while it is still this worker's; False: another took it.

    A lease that lapsed while no one took it (the database was down for everyone) is still
    renewed: no other process registered a file meanwhile, so the watch goes on unbroken.
    """
    result = connection.execute(
        update(watch_lease)
        .where(watch_lease.c.id == LEASE_ID, watch_lease.c.holder == worker_id)
        .values(lease_until=utcnow() + timedelta(seconds=lease_s))
    )
    return result.rowcount == 1


def release(connection: Connection, worker_id: int) -> None:
    """Give the lease back (a clean stop): a standby takes it at once."""
    connection.execute(
        update(watch_lease).where(watch_lease.c.id == LEASE_ID, watch_lease.c.holder == worker_id).values(holder=None)
    )


def holds(connection: Connection, worker_id: int) -> bool:
    """Whether `worker_id` holds the lease now. Taking it over changes the holder, so the
    holder alone says it; on PostgreSQL the row stays locked until the transaction ends, so no
    one takes the lease between this check and the insert after it."""
    query = select(watch_lease.c.holder).where(watch_lease.c.id == LEASE_ID)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return connection.execute(query).scalar_one_or_none() == worker_id


class LostWatch(Exception):
    """The watch lease is no longer this worker's: the file is left for the new holder."""


def insert_if_watching(connection: Connection, worker_id: int, **values: object) -> int | None:
    """records.insert_pending, in the transaction that checks the lease; LostWatch if lapsed."""
    if not holds(connection, worker_id):
        raise LostWatch
    return insert_pending(connection, **values)  # type: ignore[arg-type]
