"""Engine factory, for SQLite and PostgreSQL; a read-only variant for the API and readers.

SQLite: WAL mode and a busy timeout; readers open the file with `mode=ro`.
PostgreSQL (psycopg 3): a pool, with a connect timeout and statement, lock and
idle-transaction timeouts, so no query can hang a thread. Connections are not checked before
use (a check is a round trip each time): a reader or the daemon's writer meeting a connection
the server has closed runs again once on a new one (api.context.Reader, daemon.database.writer), so a
restarted server costs them no failed request or transaction. Readers' statements are each a
read-only transaction of their own (autocommit): one round trip a query instead of four (the
check, BEGIN, the query, ROLLBACK), 0.36 against 0.83 ms for the API's detail query.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

BUSY_TIMEOUT_MS = 10_000
READER_MMAP_BYTES = 1 << 30
BACKENDS = ("sqlite", "postgresql")

# PostgreSQL: a server that does not answer within this is down, as far as HTX can tell.
CONNECT_TIMEOUT_S = 5
# The longest a statement may run (the writer's are small transactions; the readers' are
# index reads), and wait for a lock: past these the server cancels it, and the caller sees an
# error it can retry or answer 503 with, instead of a thread stuck for good.
WRITER_STATEMENT_TIMEOUT_MS = 30_000
READER_STATEMENT_TIMEOUT_MS = 5_000
LOCK_TIMEOUT_MS = 10_000
# The API's reads wait less for a lock (an admin's LOCK TABLE): a request answered 503 naming
# the lock within seconds, rather than a statement timeout that says nothing of why.
READER_LOCK_TIMEOUT_MS = 2_000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
# Connections each PostgreSQL engine may open, so that an operator can size max_connections
# (README, "Connections"). The API's readers run no more queries at once than READER_POOL_SIZE
# (api.context.Reader). A writer engine serves one writer thread, which keeps two (its
# transactions, and its one-statement writes in autocommit), plus one for a moment (the
# schema at start, a command's read). The daemon's LISTEN connection is taken out of the
# pool and counts on top.
READER_POOL_SIZE = 8
WRITER_POOL_SIZE = 2
WRITER_POOL_OVERFLOW = 1
# What pg_stat_activity shows for HTX's connections when the caller names none.
DEFAULT_APPLICATION_NAME = "htx"


def parse_url(url: str) -> URL:
    """`url` as SQLAlchemy reads it, with PostgreSQL's driver made psycopg 3 (a bare
    postgresql:// would pick psycopg2, which HTX does not ship)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def backend(url: str) -> str:
    """"sqlite" or "postgresql" (or whatever else the URL names, for callers to refuse)."""
    return parse_url(url).get_backend_name()


def display_url(url: str) -> str:
    """The URL to show in a log or on a terminal: the password masked."""
    return parse_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for another database or an in-memory one."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def missing_database(url: str) -> Path | None:
    """The SQLite file `url` names, if it does not exist yet (the daemon creates it at start)."""
    path = sqlite_path(url)
    return path if path is not None and not path.is_file() else None


def make_engine(url: str, *, readonly: bool = False, application_name: str = DEFAULT_APPLICATION_NAME) -> Engine:
    """An engine for `url`; on PostgreSQL its connections say `application_name`.

    The writer (the daemon) puts the file in WAL mode so readers never block it and it never
    blocks readers. The read-only variant opens the file with SQLite's `mode=ro`, so the API
    cannot write a row even by mistake.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() == "postgresql":
        return _postgresql_engine(parsed, readonly=readonly, application_name=application_name)
    path = sqlite_path(url)
    if path is None:
        return create_engine(parsed)
    if readonly:
        engine = create_engine(
            f"sqlite:///file:{path}?mode=ro&uri=true",
            connect_args={"check_same_thread": False},
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if readonly:
            cursor.execute("PRAGMA query_only = ON")
            # Readers map the file instead of copying pages through read() calls: the API's
            # point lookups then cost no system call once the pages are in memory.
            cursor.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES}")
        else:
            cursor.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL survives a process crash (kill -9); only a power cut can lose
            # the last commits, and it never corrupts the file.
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    return engine


def _postgresql_engine(url: URL, *, readonly: bool, application_name: str) -> Engine:
    statement_timeout = READER_STATEMENT_TIMEOUT_MS if readonly else WRITER_STATEMENT_TIMEOUT_MS
    settings = {
        "statement_timeout": statement_timeout,
        "lock_timeout": READER_LOCK_TIMEOUT_MS if readonly else LOCK_TIMEOUT_MS,
        "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION_TIMEOUT_MS,
        # Times are stored naive UTC, as on SQLite: now() and friends must agree.
        "timezone": "UTC",
    }
    extra: dict[str, Any] = {}
    if readonly:
        settings["default_transaction_read_only"] = "on"
        # Each statement its own transaction, read-only all the same: no BEGIN and ROLLBACK
        # round trips around a read. Statements of one call see their own snapshots: a
        # commit between them shows in the later ones (models.search_reads and
        # models.stats_reads allow for it).
        extra["isolation_level"] = "AUTOCOMMIT"
    options = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return create_engine(
        url,
        # A check before each use is a round trip per transaction; callers retry instead.
        pool_pre_ping=False,
        pool_size=READER_POOL_SIZE if readonly else WRITER_POOL_SIZE,
        max_overflow=0 if readonly else WRITER_POOL_OVERFLOW,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": options,
            "application_name": application_name,
        },
        **extra,
    )
