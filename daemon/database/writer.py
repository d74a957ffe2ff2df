"""The single database writer: one thread owns every write, so SQLite never sees two writers."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from daemon.errors import database_fault, is_database_fault

T = TypeVar("T")

_STOP = object()


class DatabaseWriter:
    """Runs write functions on one thread, each in a transaction of its own (`call`) or as one
    statement in autocommit (`call_statement`); callers wait for the result."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # The one-statement writes' connection, kept by the writer thread between them: taking
        # one from the pool and setting autocommit each time is a third of a claim's CPU.
        self._statement_connection: Connection | None = None
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="htx-db-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Finish the writes already asked for, then stop."""
        if self._thread.is_alive():
            self._tasks.put(_STOP)
            self._thread.join()

    def call(self, write: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run `write(connection, *args, **kwargs)` in its own transaction; return its result.

        A database that cannot be opened or written (locked, full, unreachable, corrupt) raises
        an EnvironmentFault: no image is to blame for it.
        """
        return self._call(True, write, args, kwargs)

    def call_statement(self, write: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Like `call`, for a `write` of one statement, which is atomic by itself: it runs
        without BEGIN and COMMIT (autocommit), on PostgreSQL one round trip instead of three.
        The queue's claims and outcomes go this way: they are most of a fleet's writes."""
        return self._call(False, write, args, kwargs)

    def _call(self, transaction: bool, write: Callable[..., T], args: tuple, kwargs: dict) -> T:
        if not self._thread.is_alive():
            raise RuntimeError("the database writer is not running")
        future: Future[T] = Future()
        self._tasks.put((future, transaction, write, args, kwargs))
        try:
            return future.result()
        except DBAPIError as error:
            # Its other kinds (integrity, programming errors) are bugs, and stay what they are.
            if is_database_fault(error):
                raise database_fault(error) from error
            raise

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            if task is _STOP:
                self._close_statement_connection()
                return
            future, transaction, write, args, kwargs = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                try:
                    result = self._write(transaction, write, args, kwargs)
                except DBAPIError as error:
                    # The server closed the connection (it restarted, or dropped an idle
                    # one), and SQLAlchemy invalidated it with every older one of the pool:
                    # once more on a new one. Connections are not checked before use, so
                    # this is how a restart is met; what failed was rolled back with the
                    # connection, unless the server went down within its very COMMIT, when
                    # running it again is what the next try after a fault would do too.
                    if not error.connection_invalidated:
                        raise
                    result = self._write(transaction, write, args, kwargs)
            except BaseException as error:  # handed to the caller, who decides what it means
                future.set_exception(error)
            else:
                future.set_result(result)

    def _write(self, transaction: bool, write: Callable[..., T], args: tuple, kwargs: dict) -> T:
        if transaction:
            with self._engine.begin() as connection:
                return write(connection, *args, **kwargs)
        if self._statement_connection is None:
            self._statement_connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            result = write(self._statement_connection, *args, **kwargs)
            self._statement_connection.commit()  # ends SQLAlchemy's own record of a transaction
        except BaseException:
            self._close_statement_connection()  # whatever went wrong, the next write starts afresh
            raise
        return result

    def _close_statement_connection(self) -> None:
        if self._statement_connection is not None:
            connection, self._statement_connection = self._statement_connection, None
            try:
                connection.close()
            except DBAPIError:
                pass  # the server is gone: SQLAlchemy dropped the connection
