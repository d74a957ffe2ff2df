"""The leases role: renew the claims this process holds well before their leases run out, give
back what a fault made it owe, and put back lost claims: its own orphans (held by none of its
threads) and those of dead workers (this machine's, known at once; anyone's whose lease ran
out, but not while a fault of the environment stands, nor for a lease after it)."""

from __future__ import annotations

import logging
import threading
import time

from daemon.database import work_queue
from daemon.errors import EnvironmentFault
from daemon.roles.shared import Shared
from models.files import process_alive

log = logging.getLogger("htx.daemon")


class Leases:
    def __init__(self, shared: Shared, host: str) -> None:
        self.shared = shared
        self.host = host
        # When the last fault of the environment ended (monotonic): for a lease after it,
        # lapsed leases are not taken for dead workers (daemon.database.work_queue.requeue_lost).
        self._recovered_at: float | None = None
        self.wake = threading.Event()

    def fault_ended(self) -> None:
        self._recovered_at = time.monotonic()
        self.wake.set()  # give back what the fault made this process owe, now

    def loop(self) -> None:
        shared = self.shared
        interval = shared.config.pipeline.lease_s / 3
        while not shared.stopping.is_set():
            self.wake.wait(interval)
            self.wake.clear()
            if shared.stopping.is_set():
                return
            try:
                self._renew()
                self.settle_owed()
                self._requeue_orphans()
                self.requeue_lost()
            except EnvironmentFault as fault:
                shared.report(fault)
            except Exception:
                log.exception("could not renew the leases")

    def stop(self) -> None:
        self.wake.set()  # the loop waits on it, not on the stop

    def _renew(self) -> None:
        shared = self.shared
        held = shared.claims.renewable()
        if held:
            shared.writer.call_statement(work_queue.renew, shared.me.worker_id, held, lease_s=shared.config.pipeline.lease_s)

    def settle_owed(self) -> None:
        """Give back the claims whose give-back a fault stopped (EnvironmentFault if it still
        stands)."""
        shared = self.shared
        owed = shared.claims.owed()
        for image_id, values in owed:
            shared.writer.call_statement(work_queue.release, shared.me.worker_id, [image_id], values)
            shared.claims.settled(image_id)
        if owed:
            log.info("%d image(s) interrupted by the fault are queued again", len(owed))
            shared.signal.wake()

    def settle_owed_at_stop(self) -> None:
        try:
            self.settle_owed()
        except EnvironmentFault as fault:
            log.warning(
                "%d image(s) are still claimed (%s): they are queued again when their lease runs out",
                len(self.shared.claims.owed()),
                fault,
            )

    def _requeue_orphans(self) -> None:
        """Claims the database says are this process's but none of its threads holds: a bug
        lost them. Put back, so that no image stays `processing` for ever."""
        shared = self.shared
        orphans = shared.claims.orphans(shared.writer.call_statement(work_queue.claimed_by, shared.me.worker_id))
        if not orphans:
            return
        requeued, failed = shared.writer.call(
            work_queue.requeue_orphans, shared.me.worker_id, orphans, max_attempts=shared.config.pipeline.max_attempts
        )
        log.warning(
            "%d image(s) claimed by this process were held by none of its threads: %d queued again, %d failed",
            len(orphans),
            requeued,
            failed,
        )

    def requeue_lost(self, *, at_start: bool = False) -> None:
        """Put back the claims of workers that are gone: this machine's dead processes (known
        at once), and anyone's whose lease ran out."""
        shared = self.shared
        dead = [
            worker_id
            for worker_id, pid in shared.writer.call(work_queue.local_workers, self.host)
            if worker_id != shared.me.worker_id and not process_alive(pid)
        ]
        requeued, failed = shared.writer.call(
            work_queue.requeue_lost,
            max_attempts=shared.config.pipeline.max_attempts,
            dead_workers=dead,
            lapsed=self._leases_trusted(),
        )
        if dead:
            shared.writer.call(work_queue.mark_stopped, dead)
        if requeued:
            when = "interrupted by a stop or crash" if at_start else "whose worker stopped"
            log.info("%d image(s) %s are queued again", requeued, when)
            shared.signal.wake()
        if failed:
            log.warning("%d image(s) failed: every worker that processed them stopped before it finished", failed)

    def _leases_trusted(self) -> bool:
        """Whether a lapsed lease means a dead worker: not during a fault of the environment,
        nor for a lease after it, while the holders that lived through it renew theirs."""
        shared = self.shared
        if shared.outage.problem is not None:
            return False
        recovered_at = self._recovered_at
        return recovered_at is None or time.monotonic() - recovered_at >= shared.config.pipeline.lease_s
