"""Who watches the inbox: one daemon process at a time, whatever the number of machines.

On PostgreSQL, a session-level advisory lock, held on a connection of its own for as long as
the process watches: the server releases it the moment that connection ends (the process
died, or its machine did, once TCP keepalives notice). On SQLite, whose daemons share one
machine, an flock on a file in the data folder, which the kernel releases with the process.
Processes that do not hold it stand by and try again every few seconds.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine

log = logging.getLogger("htx.daemon")

# pg_try_advisory_lock's key: "htx" and 1, so no other application's lock is likely to match.
ADVISORY_KEY = 0x68747801
LOCK_FILE = ".inbox.lock"


class InboxLock(Protocol):
    def try_acquire(self) -> bool:
        """Take the lock if it is free; whether this process holds it now."""

    def still_held(self) -> bool:
        """Whether the lock taken is still this process's (a lost database connection loses it)."""

    def release(self) -> None: ...


class AdvisoryLock:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Any = None  # a psycopg connection, outside the engine's pool

    def try_acquire(self) -> bool:
        try:
            if self._connection is None:
                proxied = self._engine.raw_connection()
                self._connection = proxied.driver_connection
                proxied.detach()  # out of the pool: its own session for as long as the lock is held
                self._connection.autocommit = True
            taken = self._connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_KEY,)).fetchone()[0]
        except Exception as error:  # SQLAlchemy's or psycopg's: no server now, try again later
            log.debug("inbox lock: %s", error)
            self.release()
            return False
        return bool(taken)

    def still_held(self) -> bool:
        if self._connection is None:
            return False
        try:
            self._connection.execute("SELECT 1")
        except Exception:  # the session, and with it the lock, is gone
            self.release()
            return False
        return True

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()  # ends the session: the server releases the lock
            except Exception:
                pass


class FileLock:
    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def inbox_lock(engine: Engine, data_dir: Path) -> InboxLock:
    return AdvisoryLock(engine) if engine.dialect.name == "postgresql" else FileLock(data_dir)
