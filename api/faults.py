"""What went wrong with the database, in a few words a client and an operator can act on,
and one log line per change of it (a server down answers every request 503; one WARNING each
was 184 lines a minute).

Problems: the server unreachable, its connection slots full, a lock or statement timeout
(PostgreSQL's, set by models.db), and SQLite's file locked or busy.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger("htx.api")

UNREACHABLE = "the database server is unreachable"
TOO_MANY_CONNECTIONS = "the database server has no free connection slot (too many connections)"
LOCK_TIMEOUT = "a read or write waited too long for a database lock (lock timeout)"
STATEMENT_TIMEOUT = "a database statement ran too long and was cancelled (statement timeout)"
SQLITE_BUSY = "the database file is locked by another process (busy)"

# PostgreSQL's SQLSTATE codes (Appendix A of its manual).
_SQLSTATES = {
    "53300": TOO_MANY_CONNECTIONS,
    "55P03": LOCK_TIMEOUT,  # lock_not_available: lock_timeout
    "57014": STATEMENT_TIMEOUT,  # query_canceled: statement_timeout
}
# How long after a timeout /healthz still names it, though its own read succeeds: the read
# /healthz does touches no table the lock may be on.
RECENT_S = 15.0


def problem_of(error: BaseException) -> str | None:
    """The problem `error` shows, or None for one that is none of these (a missing schema,
    a damaged file)."""
    orig = getattr(error, "orig", error)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _SQLSTATES:
        return _SQLSTATES[sqlstate]
    if sqlstate is not None and str(sqlstate).startswith("08"):  # connection exception
        return UNREACHABLE
    text = str(orig).lower()
    if any(words in text for words in ("too many clients", "too many connections", "remaining connection slots")):
        return TOO_MANY_CONNECTIONS
    if isinstance(orig, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return SQLITE_BUSY
    if "statement timeout" in text:
        return STATEMENT_TIMEOUT
    if "lock timeout" in text:
        return LOCK_TIMEOUT
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return UNREACHABLE
    if isinstance(error, (OperationalError, InterfaceError)) and sqlite3 is not None and not isinstance(orig, sqlite3.Error):
        # psycopg's OperationalError without a code is the client's: the connection could not
        # be made or was lost (refused, a name that does not resolve, no route), never a
        # missing schema, which the server reports with its code.
        return UNREACHABLE
    return None


class Faults:
    """The database's present problem as this process has seen it, logged when it changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.problem: str | None = None
        self._since = 0.0
        self._last_seen = 0.0

    def failed(self, problem: str, detail: object) -> None:
        now = time.monotonic()
        with self._lock:
            self._last_seen = now
            if problem == self.problem:
                return
            self.problem, self._since = problem, now
        log.warning("database problem: %s: %s", problem, detail)

    def succeeded(self) -> None:
        if self.problem is None:  # the common case: no lock taken
            return
        with self._lock:
            if self.problem is None:
                return
            problem, self.problem = self.problem, None
            lasted = time.monotonic() - self._since
        log.warning("database working again after %.0f s (was: %s)", lasted, problem)

    def recent(self) -> str | None:
        """The problem, while it is present or was seen in the last RECENT_S."""
        with self._lock:
            if self.problem is not None and time.monotonic() - self._last_seen < RECENT_S:
                return self.problem
        return None
