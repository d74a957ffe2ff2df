"""Faults of the environment, waited out: work holds still, one log line when a fault starts,
one when it ends, and tries again at growing intervals in between."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from daemon.errors import EnvironmentFault

log = logging.getLogger("htx.daemon")

FIRST_PAUSE_S = 0.5
# A short cap: once the cause is gone (a restarted server, slots freed) work resumes within
# seconds, and a check every 10 s costs nothing while a long fault lasts.
MAX_PAUSE_S = 10.0
# How often a waiting thread looks at the stop flag: a stop takes at most this long to notice.
_STOP_POLL_S = 0.2


class Outage:
    """Holds work back while the machine is at fault (a full disk, a database that cannot be
    written), and checks again after pauses that double from 0.5 s up to 10 s.

    Threads that do work call `wait_turn` before each piece of it, and `report` when it failed
    for a fault of the environment. While a fault stands, one thread at a time, once the pause
    is over, runs `check` (which raises the fault again, or returns when it is gone); the others
    wait. `on_change(problem)` runs after each change of state, outside the lock.
    """

    def __init__(self, check: Callable[[], None], on_change: Callable[[str | None], None]) -> None:
        self._check = check
        self._on_change = on_change
        self._lock = threading.Condition()
        self.problem: str | None = None
        self._since = 0.0
        self._pause_s = FIRST_PAUSE_S
        self._retry_at = 0.0
        self._checking = False

    def report(self, fault: EnvironmentFault) -> None:
        """Work failed for `fault`: hold everything back for the next pause."""
        with self._lock:
            now = time.monotonic()
            changed = fault.problem != self.problem
            if not changed and now < self._retry_at:
                return  # another thread's report of the same fault already set the pause
            if changed:
                started = self.problem is None
                self.problem = fault.problem
                if started:
                    self._since = now
                    self._pause_s = FIRST_PAUSE_S
                log.warning(
                    "%s (%s): images wait in the queue; trying again in %.1f s, then less often (at most every %.0f s)",
                    fault.problem,
                    fault.detail,
                    self._pause_s,
                    MAX_PAUSE_S,
                )
            self._retry_at = now + self._pause_s
            self._pause_s = min(self._pause_s * 2, MAX_PAUSE_S)
        if changed:
            self._on_change(fault.problem)

    def resolve(self) -> None:
        """The fault is gone (a check or a piece of work succeeded)."""
        with self._lock:
            if self.problem is None:
                return
            log.warning("%s: resolved after %.0f s; resuming", self.problem, time.monotonic() - self._since)
            self.problem = None
            self._pause_s = FIRST_PAUSE_S
            self._lock.notify_all()
        self._on_change(None)

    def pause(self, stop: threading.Event) -> bool:
        """Wait until the current pause is over; False if `stop` was set meanwhile."""
        while not stop.is_set():
            with self._lock:
                remaining = self._retry_at - time.monotonic()
            if remaining <= 0:
                return True
            stop.wait(min(_STOP_POLL_S, remaining))
        return False

    def wait_turn(self, stop: threading.Event) -> bool:
        """Return at once when all is well; while a fault stands, wait until it is gone. False
        if `stop` was set meanwhile."""
        while True:
            with self._lock:
                if stop.is_set():
                    return False
                if self.problem is None:
                    return True
                now = time.monotonic()
                if self._checking or now < self._retry_at:
                    self._lock.wait(min(_STOP_POLL_S, max(0.01, self._retry_at - now)))
                    continue
                self._checking = True
            try:
                self._check()
            except EnvironmentFault as fault:
                with self._lock:
                    self._checking = False
                self.report(fault)
                continue
            except BaseException:
                with self._lock:
                    self._checking = False
                raise
            with self._lock:
                self._checking = False
            self.resolve()
