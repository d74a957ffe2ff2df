"""The watch role: one process of the fleet at a time holds the watch lease
(daemon.database.watch_lease, renewed every second; a standby takes over when it lapses,
whether the holder died or froze), runs the inbox watcher and rescans; complete files go to the
registrar. Without the lease a process stands by and tries for it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from daemon.database import watch_lease
from daemon.errors import EnvironmentFault
from daemon.inbox.watcher import InboxWatcher
from daemon.roles.shared import Shared

log = logging.getLogger("htx.daemon")

# How often the watcher renews the watch lease, and a standby tries for it.
WATCH_CHECK_S = 1.0
# How long the watch lease lasts unrenewed: a few renewals may be missed (a slow database, a
# rescan) before a standby takes the inbox; with WATCH_CHECK_S, the longest a dead or frozen
# watcher leaves the inbox unwatched.
WATCH_LEASE_S = 5 * WATCH_CHECK_S


class Watching:
    def __init__(self, shared: Shared, offer: Callable[[Path], None], *, observe: bool, workers: int) -> None:
        self.shared = shared
        self._offer = offer
        self._observe = observe
        self._workers = workers  # for the log line
        self.watcher: InboxWatcher | None = None  # while this process holds the watch lease

    def is_watching(self) -> bool:
        return self.watcher is not None

    def settling(self) -> int:
        """Files seen and not yet offered (still being written, or just closed)."""
        watcher = self.watcher
        return 0 if watcher is None else watcher.settling()

    def recheck(self, path: Path) -> None:
        """Look at an inbox file again, if this process watches."""
        watcher = self.watcher
        if watcher is not None:
            watcher.recheck(path)

    def start(self) -> bool:
        """Take the watch lease if it is free, then watch and scan; whether this process watches."""
        if not self._lease(watch_lease.acquire):
            return False
        config = self.shared.config
        watcher = InboxWatcher(config.inbox_dir, config.watch, self._offer, observe=self._observe)
        watcher.start()
        self.watcher = watcher
        found = watcher.scan()
        log.info("watching %s (%s, %d worker(s)); %d file(s) already in the inbox", config.inbox_dir, watcher.mode, self._workers, found)
        return True

    def stop(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.stop()
            if self.shared.me.worker_id is not None:
                try:
                    self.shared.writer.call_statement(watch_lease.release, self.shared.me.worker_id)
                except EnvironmentFault:
                    pass  # the lease lapses by itself

    def _lease(self, statement: Callable[..., bool]) -> bool:
        """Take or renew the watch lease; False when this process does not hold it (or cannot
        reach the database to say it does: a standby may then take the inbox)."""
        worker_id = self.shared.me.worker_id
        if worker_id is None:
            return False
        try:
            return self.shared.writer.call_statement(statement, worker_id, lease_s=WATCH_LEASE_S)
        except EnvironmentFault as fault:
            log.debug("watch lease: %s", fault)
            return False

    def loop(self) -> None:
        """Keep the inbox watched by this process, or stand by for it; rescan while watching."""
        rescan_s = self.shared.config.watch.rescan_s or float("inf")
        next_rescan = time.monotonic() + rescan_s
        while not self.shared.stopping.wait(WATCH_CHECK_S):
            if self.watcher is None:
                if self.start():
                    next_rescan = time.monotonic() + rescan_s
                continue
            if not self._lease(watch_lease.renew):
                log.warning("another process took the watch (this one missed renewing it for %.0f s); standing by", WATCH_LEASE_S)
                self.stop()
                continue
            if time.monotonic() >= next_rescan:
                found = self.watcher.scan()
                log.debug("rescanned the inbox: %d file(s)", found)
                next_rescan = time.monotonic() + rescan_s
