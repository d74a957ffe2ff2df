"""Wakes idle workers when there is work, without busy polling.

Within a process, whoever makes work (the registrar, a stage handing an image on) calls
`wake`. Across processes, on PostgreSQL, a thread LISTENs on the queue's channel, on a
connection of its own, and wakes the workers on each NOTIFY (daemon.database.work_queue.announce).
Workers still look at the queue every `fallback_s` (a NOTIFY sent while the listener was
reconnecting, `htx reprocess` on SQLite), which costs one indexed query.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine

from daemon.database.work_queue import CHANNEL

log = logging.getLogger("htx.daemon")

RECONNECT_S = 2.0
# How long the listener waits on its socket before it looks at the stop flag again: a wait
# on the client's side, no round trip. A cancel does not end it (no query runs meanwhile), so
# this is what a stop waits for.
STOP_POLL_S = 0.25


class WorkSignal:
    def __init__(self, engine: Engine, *, fallback_s: float = 2.0) -> None:
        self._engine = engine
        self._event = threading.Event()
        self._stopping = threading.Event()
        self.fallback_s = fallback_s
        self._connection: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._engine.dialect.name == "postgresql":
            self._thread = threading.Thread(target=self._listen, name="htx-listener", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._event.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wake(self) -> None:
        self._event.set()

    def wait(self) -> None:
        """Until woken, or `fallback_s`; then the next wait waits for the next wake."""
        self._event.wait(self.fallback_s)
        self._event.clear()

    def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                proxied = self._engine.raw_connection()
                self._connection = connection = proxied.driver_connection
                proxied.detach()  # out of the pool: a session of its own, listening
                connection.autocommit = True
                connection.execute(f"LISTEN {CHANNEL}")
                self.wake()  # what was announced while not listening
                while not self._stopping.is_set():
                    for _notice in connection.notifies(timeout=STOP_POLL_S, stop_after=1):
                        self.wake()
            except Exception as error:  # the server went away: listen again when it is back
                if not self._stopping.is_set():
                    log.debug("work listener: %s", error)
                    self._stopping.wait(RECONNECT_S)
            finally:
                connection, self._connection = self._connection, None
                if connection is not None:
                    try:
                        connection.close()
                    except Exception:
                        pass
