"""The daemon: one process of HTX's fleet, as roles around one store and one database.

The database is the queue (daemon.database.work_queue): any number of daemon processes, on any
number of machines sharing one database and one data folder, take images from it. `Daemon`
owns only the life cycle: it prepares the store and the database, starts the roles this
process has (pipeline.roles), each on threads of its own, and stops them. The roles
(daemon/roles/), each given what it needs (daemon.roles.shared.Shared), not the daemon:
- "watch": watching (the watch lease, the watcher, rescans) and the registrar (hash, pending
  row, duplicates);
- "thumbnails": pipeline workers (claim, stages, outcome);
- "captions": the caption feeder and worker (or, with caption.model = "none", CaptionsOff),
  and the embedding of captions for search by meaning (daemon.roles.embedding);
- always: the leases (renew held claims, put back lost ones) and the heartbeat, here.
Every claim ends through daemon.roles.claims (given back) or daemon.roles.outcomes (recorded,
then its file put in the store, models.store); the database writer applies every write of the
process, one transaction at a time.

Crash safety: a row is committed before its file moves; an outcome is committed only while its
claim is held, so a worker whose claim was taken over writes nothing; a dead worker's claims go
back to pending. A fault of the machine (a full disk, a data folder that cannot be written, a
database that cannot be reached or written) is never the image's: the claim goes back and every
thread waits it out (daemon.outage).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from daemon.captions.captioner import Captioner
from daemon.captions.factory import make_captioner
from daemon.database import records, work_queue
from daemon.database.work_queue import CAPTION, PREPARE
from daemon.database.work_signal import WorkSignal
from daemon.database.writer import DatabaseWriter
from daemon.errors import EnvironmentFault, database_fault
from daemon.inbox.watcher import InboxWatcher
from daemon.notify import SystemdNotifier
from daemon.outage import Outage
from daemon.roles.captioning import Captioning, CaptionsOff
from daemon.roles.claims import Claims
from daemon.roles.embedding import Embedding
from daemon.roles.leases import Leases
from daemon.roles.outcomes import Outcomes
from daemon.roles.pipeline_worker import PipelineWorker
from daemon.roles.registrar import Registrar
from daemon.roles.shared import Me, Shared, spawn
from daemon.roles.watching import Watching
from daemon.stages.decode import configure_pillow
from models import migrate
from models.status_reads import superuser_role
from models.config import Config
from models.db import make_engine
from models.stores import open_store
from models.text_embedder import TextEmbedder

log = logging.getLogger("htx.daemon")

HEARTBEAT_S = 5.0


class Daemon:
    def __init__(self, config: Config, captioner: Captioner | None = None, *, observe: bool = True) -> None:
        self.config = config
        self.roles = frozenset(config.pipeline.roles)
        self.captioner: Captioner = captioner if captioner is not None else make_captioner(config)
        self.engine = make_engine(config.database_url, application_name="htx-daemon")
        self.writer = DatabaseWriter(self.engine)
        self.host = socket.gethostname()
        self.worker_name = f"{self.host}:{os.getpid()}"
        self._started_at = records.utcnow()
        self._threads: list[threading.Thread] = []
        # Its check ends with this daemon's heartbeat, and its end wakes the leases: both called
        # only once the roles below exist.
        outage = Outage(self._check_environment, on_change=self._problem_changed)
        shared = Shared(config, open_store(config), self.writer, WorkSignal(self.engine), Me(self.worker_name), outage)
        self.shared = shared
        self._leases = Leases(shared, self.host)
        self._worker_count = (config.pipeline.workers or os.cpu_count() or 1) if "thumbnails" in self.roles else 0
        self._watching = Watching(shared, lambda path: self._registrar.offer(path), observe=observe, workers=self._worker_count)
        claims = Claims(shared, recheck=self._watching.recheck)
        outcomes = Outcomes(shared, claims)
        self._registrar = Registrar(shared, outcomes, watching=self._watching.is_watching)
        captions_here = "captions" in self.roles
        self._captions: Captioning | None = None
        self._captions_off: CaptionsOff | None = None
        if captions_here and self.captioner.input_size is not None:
            self._captions = Captioning(shared, claims, outcomes, self.captioner, on_status=self._try_heartbeat)
        elif captions_here:
            self._captions_off = CaptionsOff(shared, claims)
        self.embedding: Embedding | None = None
        if captions_here and config.search.enabled:
            self.embedding = Embedding(shared, TextEmbedder(config.search.model, config.base_dir))
        self._pipeline = PipelineWorker(shared, claims, outcomes, self.captioner, self._captions)

    @property
    def worker_id(self) -> int | None:
        """This process's daemon_state row, once started."""
        return self.shared.me.worker_id

    @property
    def watcher(self) -> InboxWatcher | None:
        """The inbox watcher, while this process holds the watch lease."""
        return self._watching.watcher

    @property
    def stages(self) -> tuple[str, ...]:
        """The queue stages this process claims."""
        stages = []
        if self._worker_count:
            stages.append(PREPARE)
        if self._captions is not None or self._captions_off is not None:
            stages.append(CAPTION)
        return tuple(stages)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, stop: threading.Event | None = None) -> bool:
        """Prepare the data folder and database, then start every role (and, when this process
        gets the watch lease, watch and scan the inbox).

        With `stop`, a fault of the environment (a full disk, a database down) is waited out
        until it goes, or until `stop` is set (then False: nothing was started). Without, it
        is raised.
        """
        outage = self.shared.outage
        self.writer.start()
        while True:
            try:
                self._prepare()
                break
            except EnvironmentFault as fault:
                if stop is None:
                    raise
                self.shared.report(fault)
                if not outage.pause(stop):
                    return False
        outage.resolve()
        self.shared.signal.start()
        if self._captions is not None:
            self._captions.start(self._threads)
        elif self._captions_off is not None:
            self._captions_off.start(self._threads)
        if self.embedding is not None:
            self.embedding.start(self._threads)
        for number in range(self._worker_count):
            spawn(self._threads, f"htx-worker-{number}", self._pipeline.loop)
        spawn(self._threads, "htx-leases", self._leases.loop)
        if "watch" in self.roles:
            spawn(self._threads, "htx-registrar", self._registrar.loop)
            if not self._watching.start():
                log.info(
                    "another process watches the inbox; this one (%s) processes, and takes the watch if it stops",
                    ", ".join(sorted(self.roles)),
                )
            spawn(self._threads, "htx-watch", self._watching.loop)
        else:
            log.info("processing (%s, %d worker(s)); not watching the inbox", ", ".join(sorted(self.roles)), self._worker_count)
        return True

    def _prepare(self) -> None:
        """Folders, database schema, this process's worker row, and the claims of workers of
        this machine that died; EnvironmentFault if the machine does not allow it yet."""
        removed = self.shared.prepare_folders()
        if removed:
            log.info("removed %d unfinished temporary file(s) an earlier run left in the data folder", removed)
        configure_pillow(self.config.pipeline.max_pixels)
        try:
            migrate.upgrade(self.engine)
        except DBAPIError as error:
            # Whatever stops a migration (a server down, a role without the rights it needs)
            # is for the administrator to fix: said once, and waited out.
            raise database_fault(error) from error
        if self.worker_id is None:
            self._warn_of_a_superuser()
            self.shared.me.worker_id = self.writer.call(
                work_queue.register_worker,
                host=self.host,
                pid=os.getpid(),
                roles=" ".join(role for role in self.config.pipeline.roles),
                started_at=self._started_at,
            )
        self._leases.requeue_lost(at_start=True)
        self.heartbeat()

    def _warn_of_a_superuser(self) -> None:
        role = self.writer.call(superuser_role)
        if role is not None:
            log.warning(
                "connected to PostgreSQL as %s, a superuser: HTX's connections can take the slots the server keeps "
                "for administrators, and an admin's psql is then refused; connect as a role of its own (README: PostgreSQL)",
                role,
            )

    def _check_environment(self) -> None:
        """Raise the EnvironmentFault that still stands, if any: the outage's check."""
        self.shared.check_environment()
        self.heartbeat()  # the database can be written

    def _problem_changed(self, problem: str | None) -> None:
        if problem is None:
            self._leases.fault_ended()
        self._try_heartbeat()

    def stop(self) -> None:
        """Stop taking work, let each thread finish the image in hand (or give it back), then
        close the database."""
        self.shared.stopping.set()
        self._leases.stop()
        self._watching.stop()
        self.shared.signal.stop()
        if self._captions is not None:
            self._captions.stop()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self.writer.running and self.worker_id is not None:
            self._leases.settle_owed_at_stop()
            try:
                self.writer.call(records.write_stopped, self.worker_id)
            except EnvironmentFault as fault:
                log.warning("could not record the stop (%s): readers see the daemon as stale in a while", fault)
        self.writer.stop()
        self.engine.dispose()

    @property
    def model_still_loading(self) -> bool:
        """After `stop`: the caption model's loading thread, not waited for, still runs."""
        return self._captions is not None and self._captions.worker.running

    def run(self, stop: threading.Event, notifier: SystemdNotifier | None = None) -> None:
        """Serve until `stop` is set, saying every few seconds in the database that this
        process is alive.

        With systemd, says READY=1 now and WATCHDOG=1 after every heartbeat: the heartbeat goes
        through the database writer, so a stuck writer also stops the pings and gets the daemon
        restarted.
        """
        notifier = notifier or SystemdNotifier(None)
        interval = HEARTBEAT_S
        if notifier.watchdog_interval_s:
            interval = min(interval, notifier.watchdog_interval_s / 2)
        watching = f"watching {self.config.inbox_dir}" if self._watching.is_watching() else "standing by for the inbox"
        notifier.ready(f"{watching}; {', '.join(sorted(self.roles))}")
        while not stop.wait(interval):
            # systemd's watchdog is fed only when the database took the heartbeat: a daemon that
            # cannot write it for long is restarted, which is what that setting asks for.
            if self._try_heartbeat():
                notifier.watchdog()
        notifier.stopping()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every file seen so far is registered and the queue holds nothing this
        process could take; False if `timeout` passed first."""
        in_flight = self.shared.in_flight
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            in_flight.wait_for_none(0.1)
            # Checked outside its lock: the watcher takes its own lock, then calls `offer`.
            if self._watching.settling() == 0 and in_flight.outstanding == 0 and self._queue_empty():
                if in_flight.wait_for_none(0):
                    return True
            time.sleep(0.05)
        return False

    def _queue_empty(self) -> bool:
        try:
            if self.writer.call(work_queue.pending_count, self.stages, self.worker_id) != 0:
                return False
            return self.embedding is None or self.embedding.idle()
        except EnvironmentFault:
            return False

    def process_now(self, path: Path) -> int | None:
        """Register and process one inbox file on the calling thread; its image id, if any.

        For tools and benchmarks: the same code path as the workers.
        """
        arrival = (path, path.stat().st_ino)
        in_flight = self.shared.in_flight
        in_flight.arrive(arrival)
        try:
            image_id = self._registrar.register(arrival)
        finally:
            in_flight.end(arrival)
        if image_id is None:
            return None
        claims = self.writer.call_statement(
            work_queue.claim_ids, self.shared.me.worker_id, [image_id], lease_s=self.config.pipeline.lease_s
        )
        self.shared.claims.hold([claim.image.id for claim in claims])
        for claim in claims:
            self._pipeline.run_claim(claim)
        return image_id

    # -- heartbeat ----------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Say in the database that this process is alive, with what it runs and waits out."""
        captions = self._captions
        self.writer.call(
            records.write_heartbeat,
            self.worker_id,
            pid=os.getpid(),
            started_at=self._started_at,
            caption_model=self.captioner.model_name,
            caption_device=self.captioner.device,
            caption_runtime=self.captioner.runtime,
            caption_status=self.caption_status,
            problem=self.problem,
            caption_batches=captions.worker.batches.to_json() if captions is not None else None,
        )

    def _try_heartbeat(self) -> bool:
        if self.worker_id is None:
            return False
        try:
            self.heartbeat()
        except EnvironmentFault as fault:
            self.shared.report(fault)
            return False
        return True

    @property
    def problem(self) -> str | None:
        """The fault of the environment being waited out, if any ("data disk full")."""
        return self.shared.outage.problem

    @property
    def caption_status(self) -> str | None:
        """"loading", "ready (cpu, bfloat16)", "unavailable: <reason>"; None without a model."""
        return self._captions.worker.status if self._captions is not None else None
