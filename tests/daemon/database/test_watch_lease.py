"""The watch lease on a real database, SQLite and PostgreSQL: one holder at a time, taken over
only once it lapses, and a holder that lost it registers nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Connection, Engine, func, select, update

from daemon.database import records, watch_lease, work_queue
from models.tables import Image, WatchLease

pytestmark = pytest.mark.both_backends

leases = WatchLease.__table__
FIRST, SECOND = 1, 2


def _lapse(connection: Connection) -> None:
    """The holder stopped renewing a while ago (frozen, dead, cut off)."""
    connection.execute(update(leases).values(lease_until=records.utcnow() - timedelta(seconds=1)))


def _register(connection: Connection, worker_id: int, number: int) -> int | None:
    return watch_lease.insert_if_watching(
        connection, worker_id, sha256=f"{number:064x}", filename=f"{number}.jpg", inbox_path=f"{number}.jpg", size_bytes=10, hash_ms=1.0
    )


def test_one_holder_at_a_time_until_its_lease_lapses(engine: Engine) -> None:
    with engine.begin() as connection:
        assert watch_lease.acquire(connection, FIRST, lease_s=5)
        assert not watch_lease.acquire(connection, SECOND, lease_s=5)
        assert watch_lease.renew(connection, FIRST, lease_s=5)
        assert not watch_lease.renew(connection, SECOND, lease_s=5)
        _lapse(connection)
        assert watch_lease.acquire(connection, SECOND, lease_s=5)
        assert watch_lease.holds(connection, SECOND) and not watch_lease.holds(connection, FIRST)
        # The first wakes up: its renewal fails, it learns it lost the watch.
        assert not watch_lease.renew(connection, FIRST, lease_s=5)


def test_a_lapse_no_one_took_is_renewed_by_its_holder(engine: Engine) -> None:
    """The database was down for everyone: the watcher goes on without a hand-over."""
    with engine.begin() as connection:
        assert watch_lease.acquire(connection, FIRST, lease_s=5)
        _lapse(connection)
        assert watch_lease.renew(connection, FIRST, lease_s=5)
        assert not watch_lease.acquire(connection, SECOND, lease_s=5)


def test_a_clean_release_hands_the_watch_over_at_once(engine: Engine) -> None:
    with engine.begin() as connection:
        assert watch_lease.acquire(connection, FIRST, lease_s=5)
        watch_lease.release(connection, SECOND)  # not its lease: nothing changes
        assert not watch_lease.acquire(connection, SECOND, lease_s=5)
        watch_lease.release(connection, FIRST)
        assert watch_lease.acquire(connection, SECOND, lease_s=5)


def test_a_holder_that_lost_the_watch_registers_nothing(engine: Engine) -> None:
    with engine.begin() as connection:
        watch_lease.acquire(connection, FIRST, lease_s=5)
        assert _register(connection, FIRST, 1) is not None
        _lapse(connection)
        watch_lease.acquire(connection, SECOND, lease_s=5)
    with pytest.raises(watch_lease.LostWatch), engine.begin() as connection:
        _register(connection, FIRST, 2)
    with engine.begin() as connection:
        assert _register(connection, SECOND, 3) is not None
        names = connection.execute(select(Image.filename).order_by(Image.id)).scalars().all()
        assert names == ["1.jpg", "3.jpg"]
        assert connection.execute(select(func.count()).select_from(leases)).scalar_one() == 1


def test_a_holder_known_to_have_stopped_is_taken_over_before_its_lease_lapses(engine: Engine) -> None:
    """A daemon killed and restarted on the same machine marks its dead self stopped at start:
    it watches again at once, not a lease later."""
    with engine.begin() as connection:
        first, second = (
            work_queue.register_worker(connection, host="h", pid=pid, roles="watch", started_at=records.utcnow())
            for pid in (1, 2)
        )
        assert watch_lease.acquire(connection, first, lease_s=60)
        assert not watch_lease.acquire(connection, second, lease_s=60)
        work_queue.mark_stopped(connection, [first])
        assert watch_lease.acquire(connection, second, lease_s=60)
