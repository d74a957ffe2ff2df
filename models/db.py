"""Engine factory: SQLite in WAL mode with a busy timeout; a read-only variant for the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

BUSY_TIMEOUT_MS = 10_000
READER_MMAP_BYTES = 1 << 30


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def missing_database(url: str) -> Path | None:
    """The SQLite file `url` names, if it does not exist yet (the daemon creates it at start)."""
    path = sqlite_path(url)
    return path if path is not None and not path.is_file() else None


def make_engine(url: str, *, readonly: bool = False) -> Engine:
    """An engine for `url`.

    The writer (the daemon) puts the file in WAL mode so readers never block it and it never
    blocks readers. The read-only variant opens the file with SQLite's `mode=ro`, so the API
    cannot write a row even by mistake.
    """
    path = sqlite_path(url)
    if path is None:
        return create_engine(url)
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
