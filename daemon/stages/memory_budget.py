"""A limit on the memory that decodes hold at once, shared by all workers (issue 10).

A 9400 x 9400 RGBA PNG is a 343 KB file and 353 MB decoded: without a limit, a few of them
arriving together take every worker and more memory than the machine has.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

# How often a waiting decode looks at the stop flag: a stop takes at most this long to notice.
_STOP_POLL_S = 0.2


class DecodeStopped(Exception):
    """The daemon is stopping: a decode that was waiting for memory was not started.

    Not a PipelineError: nothing is wrong with the file, which is processed after a restart.
    """

    def __init__(self) -> None:
        super().__init__("stopped while waiting for decode memory")


class DecodeBudget:
    """Bytes that decodes may hold at once (`pipeline.decode_memory_mb`, all workers together).

    `reserve(nbytes)` waits until `nbytes` fit under the limit beside what the others hold.
    Turns are taken in order of arrival, so a large image is not overtaken for ever by small
    ones that would fit. One larger than the whole limit runs when nothing else holds any, and
    alone: it never waits for ever. When `stop` is set, waits end within _STOP_POLL_S with
    DecodeStopped; a reservation that fits at once is still granted.
    """

    def __init__(self, limit_bytes: int, *, stop: threading.Event | None = None) -> None:
        if limit_bytes < 1:
            raise ValueError(f"limit_bytes must be at least 1, not {limit_bytes}")
        self.limit_bytes = limit_bytes
        self._stop = stop
        self._lock = threading.Condition()
        self._held = 0
        self._queue: deque[object] = deque()  # one token per waiting reservation, first in line first

    @property
    def held_bytes(self) -> int:
        """Bytes reserved now."""
        with self._lock:
            return self._held

    @property
    def waiting(self) -> int:
        """Reservations waiting for their turn now."""
        with self._lock:
            return len(self._queue)

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` for the body of the `with`; wait first until they fit. DecodeStopped if
        the stop was set while waiting."""
        nbytes = max(0, nbytes)
        self._acquire(nbytes)
        try:
            yield
        finally:
            with self._lock:
                self._held -= nbytes
                self._lock.notify_all()

    def _fits(self, nbytes: int) -> bool:
        return self._held == 0 or self._held + nbytes <= self.limit_bytes

    def _acquire(self, nbytes: int) -> None:
        with self._lock:
            if not self._queue and self._fits(nbytes):
                self._held += nbytes
                return
            token = object()
            self._queue.append(token)
            try:
                while not (self._queue[0] is token and self._fits(nbytes)):
                    if self._stop is not None and self._stop.is_set():
                        raise DecodeStopped()
                    self._lock.wait(_STOP_POLL_S if self._stop is not None else None)
                self._held += nbytes
            finally:
                self._queue.remove(token)
                self._lock.notify_all()  # the next in line may fit now
