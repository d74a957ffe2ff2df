"""The single database writer: one thread owns every write, so SQLite never sees two writers."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from daemon.errors import database_fault, is_database_fault

T = TypeVar("T")

_STOP = object()


class DatabaseWriter:
    """Runs write functions, one transaction each, on one thread; callers wait for the result."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
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
        if not self._thread.is_alive():
            raise RuntimeError("the database writer is not running")
        future: Future[T] = Future()
        self._tasks.put((future, write, args, kwargs))
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
                return
            future, write, args, kwargs = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                with self._engine.begin() as connection:
                    result = write(connection, *args, **kwargs)
            except BaseException as error:  # handed to the caller, who decides what it means
                future.set_exception(error)
            else:
                future.set_result(result)

