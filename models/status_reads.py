"""Reading the service's state: the daemon's heartbeat and what it last said, the watch lease,
the schema revision, whether anything was written since (data_version), and the role connected."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, RowMapping, func, select

from models.reads import daemon_state, watch_lease

# The daemon writes its heartbeat every 5 s (daemon.service.HEARTBEAT_S): one older than two
# of them means it is not running (killed, hung, or unable to write the database).
HEARTBEAT_STALE_S = 10.0


@dataclass(frozen=True)
class DaemonStatus:
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    caption_model: str | None
    caption_device: str | None
    caption_runtime: str | None
    caption_status: str | None
    problem: str | None = None  # a fault of the environment it is waiting out
    stopped_at: datetime | None = None  # when it stopped cleanly; None while it runs

    def heartbeat_age_s(self, now: datetime) -> float:
        """Seconds since the last heartbeat; `now` is naive UTC, as stored."""
        return (now - self.heartbeat_at).total_seconds()

    def state(self, now: datetime, lease_s: float | None = None) -> str:
        """"running"; "stopped" (a clean stop); "stale": no heartbeat for two of them (killed,
        hung, or unable to write the database); "gone": none for longer than a claim's lease
        (pipeline.lease_s), so its images have gone back to the others. Without `lease_s`,
        never "gone"."""
        if self.stopped_at is not None:
            return "stopped"
        age = self.heartbeat_age_s(now)
        if lease_s is not None and age > lease_s:
            return "gone"
        return "stale" if age > HEARTBEAT_STALE_S else "running"


# The daemon to report: a running one if any (newest heartbeat first), else the last to stop.
_LATEST_DAEMON = (
    select(daemon_state)
    .order_by(daemon_state.c.stopped_at.is_(None).desc(), daemon_state.c.heartbeat_at.desc())
    .limit(1)
)


def daemon_status(connection: Connection) -> DaemonStatus | None:
    """The daemon process that says most about the service: one running, else the last one.
    With several (a fleet), `workers` lists them all."""
    row = connection.execute(_LATEST_DAEMON).mappings().first()
    if row is None:
        return None
    return daemon_status_of(row)


def daemon_status_of(row: RowMapping) -> DaemonStatus:
    """The DaemonStatus of a `daemon_state` row."""
    return DaemonStatus(
        pid=row["pid"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
        caption_model=row["caption_model"],
        caption_device=row["caption_device"],
        caption_runtime=row["caption_runtime"],
        caption_status=row["caption_status"],
        problem=row["problem"],
        stopped_at=row["stopped_at"],
    )


def watch_lapsed_s(connection: Connection, now: datetime) -> float | None:
    """How long ago the watch lease ran out unrenewed while a daemon still held it (its
    watcher froze or died without a clean stop): no one registers files then. None while it
    is current, or no one holds it (a clean stop gives it back)."""
    row = connection.execute(select(watch_lease.c.holder, watch_lease.c.lease_until)).first()
    if row is None or row.holder is None or row.lease_until is None or row.lease_until >= now:
        return None
    return (now - row.lease_until).total_seconds()


def superuser_role(connection: Connection) -> str | None:
    """The role connected, if it is a PostgreSQL superuser: its connections may take the slots
    the server keeps for administrators (superuser_reserved_connections). None otherwise."""
    if connection.dialect.name != "postgresql":
        return None
    role, superuser = connection.execute(select(func.current_user(), func.current_setting("is_superuser"))).one()
    return role if superuser == "on" else None


def schema_revision(connection: Connection) -> str | None:
    """The Alembic revision the database is at (None: not created yet)."""
    return MigrationContext.configure(connection).get_current_revision()


def data_version(connection: Connection) -> int | str | None:
    """A value that stays the same while nothing is written: callers may keep what they read
    as long as it does not change. None where no such value is known (callers read afresh).

    SQLite: its counter of commits made by other connections, comparable only with what the
    same connection said before. PostgreSQL: the server's current snapshot, as text
    (`xmin:xmax:in-progress ids`), the same on every connection. Its xmax moves on when a
    transaction takes an id, which a write does and a read does not, and a transaction that
    ends leaves the in-progress list or moves xmin: so an equal snapshot means no commit
    since (one of any database of the server changes it too, which only costs a re-read).
    """
    dialect = connection.dialect.name
    if dialect == "sqlite":
        return connection.exec_driver_sql("PRAGMA data_version").scalar_one()
    if dialect == "postgresql":
        return connection.exec_driver_sql("SELECT pg_current_snapshot()::text").scalar_one()
    return None


def health(
    connection: Connection, schema_head: str, now: datetime
) -> tuple[str | None, DaemonStatus | None, float | None]:
    """The schema revision, the daemon's last heartbeat (None before it first ran, or when the
    schema is not `schema_head`, whose columns the read expects), and how long ago the watch
    lease lapsed with no one to take it (watch_lapsed_s)."""
    revision = schema_revision(connection)
    if revision != schema_head:
        return revision, None, None
    return revision, daemon_status(connection), watch_lapsed_s(connection, now)
