"""The daemon: registers complete files, and processes images it claims from the database.

The database is the queue (daemon.database.work_queue): any number of daemon processes, on any number
of machines sharing one database and one data folder, take images from it. Each process has
roles (pipeline.roles), and threads, each with one job:
- "watch": the watch thread holds the watch lease (daemon.database.watch_lease: one process at a
  time, renewed every few seconds; another takes over when it lapses, whether the holder died or
  froze), runs the watcher, and rescans; the
  registrar hashes each complete file and inserts its pending row (unique on the digest, so
  two registrations of the same bytes never make two records), then wakes the workers;
- "thumbnails": `pipeline.workers` workers claim pending images one at a time, run the stages
  and record the outcome, or, when a caption model is configured, record metadata and
  thumbnails and hand the image to the caption stage: in this process when it has the
  "captions" role too, else through the database, the original moved to the store;
- "captions": the caption worker loads the model in the background and captions images in
  batches: those handed over in this process, and those it claims from the database;
- the lease thread renews this process's claims and puts back those of dead workers;
- the database writer applies every write of the process, one transaction at a time.

Crash safety: a row is committed before its file moves; an outcome is committed only while
its claim is held, so a worker whose claim was taken over writes nothing; a dead worker's
claims go back to pending (at once when it was a process of this machine, else when their
lease runs out), and a file found in the inbox whose bytes already have a record is either a
duplicate (removed) or the original of that record that a crash left behind (moved on).

Only regular files are read, never through a symlink (daemon.inbox.files.open_regular): anything
else in the inbox is named once in the log and left alone. A fault of the machine (a full
disk, a data folder that cannot be written, a database that cannot be reached or written) is
never the image's: the claim goes back and every thread waits it out (daemon.outage).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from daemon.database import records, watch_lease, work_queue
from daemon.captions.caption_worker import CaptionOutcome, CaptionWorker
from daemon.captions.captioner import Captioner, make_captioner
from daemon.stages.decode import EXTENSIONS, configure_pillow
from daemon.errors import (
    EnvironmentFault,
    MissingFile,
    NotRegularFile,
    OriginalGone,
    PipelineError,
    SourceChanged,
    database_fault,
    storage_fault,
)
from daemon.inbox.files import (
    FileDigest,
    file_identity,
    file_kind,
    free_name,
    hash_file,
    move_file,
    remove_stale_temporaries,
)
from daemon.held_claims import HeldClaims
from daemon.stages.memory_budget import DecodeBudget, DecodeStopped
from daemon.notify import SystemdNotifier
from daemon.outage import Outage
from daemon.stages.pipeline import prepare
from daemon.captions.recaption import caption_input
from daemon.inbox.watcher import InboxWatcher
from daemon.database.work_queue import CAPTION, PREPARE, Claim
from daemon.database.work_signal import WorkSignal
from daemon.database.writer import DatabaseWriter
from models import migrate, queries
from models.config import Config
from models.db import make_engine
from models.diskspace import data_disk_problem
from models.names import display_name, error_note, real_name, stored_name

log = logging.getLogger("htx.daemon")

HEARTBEAT_S = 5.0
# How often the watcher renews the watch lease, and a standby tries for it.
WATCH_CHECK_S = 1.0
# How long the watch lease lasts unrenewed: a few renewals may be missed (a slow database, a
# rescan) before a standby takes the inbox; with WATCH_CHECK_S, the longest a dead or frozen
# watcher leaves the inbox unwatched.
WATCH_LEASE_S = 5 * WATCH_CHECK_S
# Files skipped (not regular, unreadable) are named once each; past this many remembered, the
# memory is cleared and a file may be named once more.
MAX_SKIPPED_REMEMBERED = 10_000
# Images queued for a caption that a process with caption.model = "none" ends per claim.
CAPTIONS_OFF_BATCH = 50


# A file that arrived in the inbox: its path and inode. A new file at the same path (an upload
# renamed in as the last one with that name leaves) is another arrival.
Arrival = tuple[Path, int]
Identity = tuple[int, int, int]  # inode, size, mtime (ns): daemon.inbox.files.file_identity


def identity_text(identity: Identity) -> str:
    return ":".join(str(part) for part in identity)


@dataclass(frozen=True)
class Job:
    """One claimed image, as a worker processes it."""

    image_id: int
    sha256: str
    size_bytes: int
    earlier_ms: float  # time already spent on it: hashing, and an earlier stage's
    filename: str
    source: Path  # where its bytes are now
    arrival: Arrival | None  # None when the source is in the store (reprocessing, captions)
    identity: Identity  # of the source when hashed: the bytes processed must be those


@dataclass(frozen=True)
class CaptionTask:
    """A job waiting for its caption: metadata and thumbnails are already committed."""

    job: Job
    image_format: str | None  # None: its original is in the store already
    started: float  # perf_counter at claim, for processing_ms


class Daemon:
    def __init__(self, config: Config, captioner: Captioner | None = None, *, observe: bool = True) -> None:
        self.config = config
        self.roles = frozenset(config.pipeline.roles)
        self.captioner: Captioner = captioner if captioner is not None else make_captioner(config)
        self.engine = make_engine(config.database_url, application_name="htx-daemon")
        self.writer = DatabaseWriter(self.engine)
        self._observe = observe
        self.watcher: InboxWatcher | None = None  # while this process holds the watch lease
        self._signal = WorkSignal(self.engine)
        self.host = socket.gethostname()
        self.worker_id: int | None = None  # this process's daemon_state row, once started
        self.worker_name = f"{self.host}:{os.getpid()}"
        self._worker_count = (config.pipeline.workers or os.cpu_count() or 1) if "thumbnails" in self.roles else 0
        self._captions: CaptionWorker | None = None
        if self.captioner.input_size is not None and "captions" in self.roles:
            self._captions = CaptionWorker(
                self.captioner,
                batch_size=config.caption.batch_size,
                batch_wait_ms=config.caption.batch_wait_ms,
                finish=self._caption_done,
                hand_back=self._caption_handed_back,
                on_status=lambda _status: self._try_heartbeat(),
                incoming=lambda: self._preparing,
            )
        self._registrations: queue.Queue[Arrival] = queue.Queue()
        self._stopping = threading.Event()
        # Decoded pixels held at once by all workers: large images wait their turn.
        self._budget = DecodeBudget(config.pipeline.decode_memory_mb * 1024 * 1024, stop=self._stopping)
        self._threads: list[threading.Thread] = []
        self._started_at = records.utcnow()
        # Work in this process and not finished: files offered and not yet registered (each
        # counted once), claims in hand.
        self._state = threading.Condition()
        self._arrivals: set[Arrival] = set()
        self._outstanding = 0
        # Images whose stages run now and whose caption this process's caption worker makes
        # next: a batch waits for them, never for images that are not coming.
        self._preparing = 0
        # Names in failed/ are picked and used under this lock, so two failures never share one.
        self._failed_names = threading.Lock()
        self._outage = Outage(self._check_environment, on_change=self._problem_changed)
        # The claims this process's threads hold, and give-backs a fault made it owe.
        self._claims = HeldClaims()
        # When the last fault of the environment ended (monotonic): for a lease after it,
        # lapsed leases are not taken for dead workers (daemon.database.work_queue.requeue_lost).
        self._recovered_at: float | None = None
        self._lease_wake = threading.Event()
        self._skipped: set[tuple[Path, int, int, str]] = set()

    @property
    def stages(self) -> tuple[str, ...]:
        """The queue stages this process claims."""
        stages = []
        if self._worker_count:
            stages.append(PREPARE)
        if self._captions is not None or self._captions_off:
            stages.append(CAPTION)
        return tuple(stages)

    @property
    def _captions_off(self) -> bool:
        """caption.model = "none" in a process with the captions role: images queued for a
        caption (by a start that had a model, a recaption) are done without one here."""
        return "captions" in self.roles and self.captioner.input_size is None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, stop: threading.Event | None = None) -> bool:
        """Prepare the data folder and database, then start every thread (and, when this
        process gets the watch lease, watch and scan the inbox).

        With `stop`, a fault of the environment (a full disk, a database down) is waited out
        until it goes, or until `stop` is set (then False: nothing was started). Without, it
        is raised.
        """
        self.writer.start()
        while True:
            try:
                self._prepare()
                break
            except EnvironmentFault as fault:
                if stop is None:
                    raise
                self._report(fault)
                if not self._outage.pause(stop):
                    return False
        self._outage.resolve()
        self._signal.start()
        if self._captions is not None:
            self._captions.start()  # loads the model in the background; images queue meanwhile
            self._spawn("htx-caption-feeder", self._caption_feeder_loop)
        elif self._captions_off:
            self._spawn("htx-captions-off", self._captions_off_loop)
        for number in range(self._worker_count):
            self._spawn(f"htx-worker-{number}", self._worker_loop)
        self._spawn("htx-leases", self._lease_loop)
        if "watch" in self.roles:
            self._spawn("htx-registrar", self._registrar_loop)
            if not self._start_watching():
                log.info(
                    "another process watches the inbox; this one (%s) processes, and takes the watch if it stops",
                    ", ".join(sorted(self.roles)),
                )
            self._spawn("htx-watch", self._watch_loop)
        else:
            log.info("processing (%s, %d worker(s)); not watching the inbox", ", ".join(sorted(self.roles)), self._worker_count)
        return True

    def _start_watching(self) -> bool:
        """Take the watch lease if it is free, then watch and scan; whether this process watches."""
        if not self._lease(watch_lease.acquire):
            return False
        watcher = InboxWatcher(self.config.inbox_dir, self.config.watch, self.offer, observe=self._observe)
        watcher.start()
        self.watcher = watcher
        found = watcher.scan()
        log.info(
            "watching %s (%s, %d worker(s)); %d file(s) already in the inbox",
            self.config.inbox_dir,
            watcher.mode,
            self._worker_count,
            found,
        )
        return True

    def _stop_watching(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.stop()
            if self.worker_id is not None:
                try:
                    self.writer.call_statement(watch_lease.release, self.worker_id)
                except EnvironmentFault:
                    pass  # the lease lapses by itself

    def _lease(self, statement: Callable[..., bool]) -> bool:
        """Take or renew the watch lease; False when this process does not hold it (or cannot
        reach the database to say it does: a standby may then take the inbox)."""
        if self.worker_id is None:
            return False
        try:
            return self.writer.call_statement(statement, self.worker_id, lease_s=WATCH_LEASE_S)
        except EnvironmentFault as fault:
            log.debug("watch lease: %s", fault)
            return False

    def _watch_loop(self) -> None:
        """Keep the inbox watched by this process, or stand by for it; rescan while watching."""
        rescan_s = self.config.watch.rescan_s or float("inf")
        next_rescan = time.monotonic() + rescan_s
        while not self._stopping.wait(WATCH_CHECK_S):
            if self.watcher is None:
                if self._start_watching():
                    next_rescan = time.monotonic() + rescan_s
                continue
            if not self._lease(watch_lease.renew):
                log.warning("another process took the watch (this one missed renewing it for %.0f s); standing by", WATCH_LEASE_S)
                self._stop_watching()
                continue
            if time.monotonic() >= next_rescan:
                found = self.watcher.scan()
                log.debug("rescanned the inbox: %d file(s)", found)
                next_rescan = time.monotonic() + rescan_s

    def _folders(self) -> list[Path]:
        config = self.config
        return [config.inbox_dir, config.uploads_dir, config.originals_dir, config.thumbnails_dir, config.failed_dir]

    def _prepare(self) -> None:
        """Folders, database schema, this process's worker row, and the claims of workers of
        this machine that died; EnvironmentFault if the machine does not allow it yet."""
        self._make_folders()
        removed = remove_stale_temporaries([self.config.thumbnails_dir, self.config.originals_dir, self.config.failed_dir])
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
            self.worker_id = self.writer.call(
                work_queue.register_worker,
                host=self.host,
                pid=os.getpid(),
                roles=" ".join(role for role in self.config.pipeline.roles),
                started_at=self._started_at,
            )
        self._requeue_lost(at_start=True)
        self.heartbeat()

    def _warn_of_a_superuser(self) -> None:
        role = self.writer.call(queries.superuser_role)
        if role is not None:
            log.warning(
                "connected to PostgreSQL as %s, a superuser: HTX's connections can take the slots the server keeps "
                "for administrators, and an admin's psql is then refused; connect as a role of its own (README: PostgreSQL)",
                role,
            )

    def _requeue_lost(self, *, at_start: bool = False) -> None:
        """Put back the claims of workers that are gone: this machine's dead processes (known
        at once), and anyone's whose lease ran out."""
        dead = [
            worker_id
            for worker_id, pid in self.writer.call(work_queue.local_workers, self.host)
            if worker_id != self.worker_id and not _process_alive(pid)
        ]
        requeued, failed = self.writer.call(
            work_queue.requeue_lost,
            max_attempts=self.config.pipeline.max_attempts,
            dead_workers=dead,
            lapsed=self._leases_trusted(),
        )
        if dead:
            self.writer.call(work_queue.mark_stopped, dead)
        if requeued:
            when = "interrupted by a stop or crash" if at_start else "whose worker stopped"
            log.info("%d image(s) %s are queued again", requeued, when)
            self._signal.wake()
        if failed:
            log.warning("%d image(s) failed: every worker that processed them stopped before it finished", failed)

    def _leases_trusted(self) -> bool:
        """Whether a lapsed lease means a dead worker: not during a fault of the environment,
        nor for a lease after it, while the holders that lived through it renew theirs."""
        if self._outage.problem is not None:
            return False
        recovered_at = self._recovered_at
        return recovered_at is None or time.monotonic() - recovered_at >= self.config.pipeline.lease_s

    def _problem_changed(self, problem: str | None) -> None:
        if problem is None:
            self._recovered_at = time.monotonic()
            self._lease_wake.set()  # give back what the fault made this process owe, now
        self._try_heartbeat()

    def _lease_loop(self) -> None:
        """Renew the leases of the claims held well before they run out, give back what a fault
        made this process owe, and put back lost claims: this process's orphans, and those of
        dead workers."""
        interval = self.config.pipeline.lease_s / 3
        while not self._stopping.is_set():
            self._lease_wake.wait(interval)
            self._lease_wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._renew()
                self._settle_owed()
                self._requeue_orphans()
                self._requeue_lost()
            except EnvironmentFault as fault:
                self._report(fault)
            except Exception:
                log.exception("could not renew the leases")

    def _renew(self) -> None:
        held = self._claims.renewable()
        if held:
            self.writer.call_statement(work_queue.renew, self.worker_id, held, lease_s=self.config.pipeline.lease_s)

    def _settle_owed(self) -> None:
        """Give back the claims whose give-back a fault stopped (EnvironmentFault if it still
        stands)."""
        owed = self._claims.owed()
        for image_id, values in owed:
            self.writer.call_statement(work_queue.release, self.worker_id, [image_id], values)
            self._claims.settled(image_id)
        if owed:
            log.info("%d image(s) interrupted by the fault are queued again", len(owed))
            self._signal.wake()

    def _requeue_orphans(self) -> None:
        """Claims the database says are this process's but none of its threads holds: a bug
        lost them. Put back, so that no image stays `processing` for ever."""
        orphans = self._claims.orphans(self.writer.call_statement(work_queue.claimed_by, self.worker_id))
        if not orphans:
            return
        requeued, failed = self.writer.call(
            work_queue.requeue_orphans, self.worker_id, orphans, max_attempts=self.config.pipeline.max_attempts
        )
        log.warning(
            "%d image(s) claimed by this process were held by none of its threads: %d queued again, %d failed",
            len(orphans),
            requeued,
            failed,
        )

    def _make_folders(self) -> None:
        for folder in self._folders():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise storage_fault(error, self._folder_name(folder)) from error

    def _folder_name(self, path: Path) -> str:
        """A folder of HTX's as a person knows it: "thumbnails", never a path on the server."""
        for folder in self._folders():
            if path == folder or folder in path.parents:
                return folder.name
        return path.name

    def _check_environment(self) -> None:
        """Raise the EnvironmentFault that still stands, if any: the outage's check."""
        self._make_folders()
        for folder in self._folders():
            if not folder.is_dir():
                raise EnvironmentFault("a folder of the data folder is not a folder", f"{folder.name}/")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise EnvironmentFault("no permission to write in the data folder", f"{folder.name}/")
        problem = data_disk_problem(self.config.data_dir)
        if problem is not None:
            raise EnvironmentFault(problem, "free space checked")
        self.heartbeat()  # the database can be written

    def stop(self) -> None:
        """Stop taking work, let each thread finish the image in hand (or give it back), then
        close the database."""
        self._stopping.set()
        self._lease_wake.set()  # the lease thread waits on it, not on the stop
        self._stop_watching()
        self._signal.stop()
        if self._captions is not None:
            # Cuts the batch in hand short; it and the images still waiting go back to pending.
            self._captions.stop()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self.writer.running and self.worker_id is not None:
            self._settle_owed_at_stop()
            try:
                self.writer.call(records.write_stopped, self.worker_id)
            except EnvironmentFault as fault:
                log.warning("could not record the stop (%s): readers see the daemon as stale in a while", fault)
        self.writer.stop()
        self.engine.dispose()

    def _settle_owed_at_stop(self) -> None:
        try:
            self._settle_owed()
        except EnvironmentFault as fault:
            log.warning(
                "%d image(s) are still claimed (%s): they are queued again when their lease runs out",
                len(self._claims.owed()),
                fault,
            )

    @property
    def model_still_loading(self) -> bool:
        """After `stop`: the caption model's loading thread, not waited for, still runs."""
        return self._captions is not None and self._captions.running

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
        watching = f"watching {self.config.inbox_dir}" if self.watcher is not None else "standing by for the inbox"
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
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            with self._state:
                self._state.wait_for(lambda: self._outstanding == 0, timeout=0.1)
            # Checked outside the lock: the tracker takes its own lock, then calls `offer`.
            watcher = self.watcher
            if (watcher is None or watcher.settling() == 0) and self._outstanding == 0 and self._queue_empty():
                with self._state:
                    if self._outstanding == 0:
                        return True
            time.sleep(0.05)
        return False

    def _queue_empty(self) -> bool:
        try:
            return self.writer.call(work_queue.pending_count, self.stages, self.worker_id) == 0
        except EnvironmentFault:
            return False

    def process_now(self, path: Path) -> int | None:
        """Register and process one inbox file on the calling thread; its image id, if any.

        For tools and benchmarks: the same code path as the workers.
        """
        arrival = (path, path.stat().st_ino)
        with self._state:
            self._arrivals.add(arrival)
            self._outstanding += 1
        try:
            image_id = self._register(arrival)
        finally:
            self._release(arrival)
        if image_id is None:
            return None
        claims = self.writer.call_statement(work_queue.claim_ids, self.worker_id, [image_id], lease_s=self.config.pipeline.lease_s)
        self._claims.hold(claim.image.id for claim in claims)
        for claim in claims:
            self._run_claim(claim)
        return image_id

    def heartbeat(self) -> None:
        """Say in the database that this process is alive, with what it runs and waits out."""
        self.writer.call(
            records.write_heartbeat,
            self.worker_id,
            pid=os.getpid(),
            started_at=self._started_at,
            caption_model=self.captioner.model_name,
            caption_device=self.captioner.device,
            caption_runtime=self.captioner.runtime,
            caption_status=self.caption_status,
            problem=self._outage.problem,
            caption_batches=self._captions.batches.to_json() if self._captions is not None else None,
        )

    def _report(self, fault: EnvironmentFault) -> None:
        """Hold work back for `fault`; named for its cause when that is a full data disk, which
        SQLite reports as an I/O error when it cannot even make its journal files."""
        problem = data_disk_problem(self.config.data_dir)
        if problem is not None and problem != fault.problem:
            fault = EnvironmentFault(problem, fault.detail)
        self._outage.report(fault)

    def _try_heartbeat(self) -> bool:
        if self.worker_id is None:
            return False
        try:
            self.heartbeat()
        except EnvironmentFault as fault:
            self._report(fault)
            return False
        return True

    @property
    def problem(self) -> str | None:
        """The fault of the environment being waited out, if any ("data disk full")."""
        return self._outage.problem

    @property
    def caption_status(self) -> str | None:
        """"loading", "ready (cpu, bfloat16)", "unavailable: <reason>"; None without a model."""
        return self._captions.status if self._captions is not None else None

    def _spawn(self, name: str, target: object) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- bookkeeping --------------------------------------------------------------------------

    def offer(self, path: Path) -> None:
        """A complete file in the inbox (called by the watcher; must return at once)."""
        try:
            status = os.lstat(path)
        except OSError:
            return  # gone already
        if not stat.S_ISREG(status.st_mode):
            self._skip(path, f"not a regular file ({file_kind(status.st_mode)})")
            return
        arrival = (path, status.st_ino)
        with self._state:
            if arrival in self._arrivals:
                return
            self._arrivals.add(arrival)
            self._outstanding += 1
        self._registrations.put(arrival)

    def _release(self, arrival: Arrival | None = None, *, counted: bool = True) -> None:
        with self._state:
            if arrival is not None:
                self._arrivals.discard(arrival)
            if counted:
                self._outstanding -= 1
            self._state.notify_all()

    def _skip(self, path: Path, reason: str) -> None:
        """Leave a file in the inbox unread, and say so once (not at every rescan)."""
        try:
            status = os.lstat(path)
        except OSError:
            return
        key = (path, status.st_ino, status.st_mtime_ns, reason)
        with self._state:
            if key in self._skipped:
                return
            if len(self._skipped) >= MAX_SKIPPED_REMEMBERED:
                self._skipped.clear()
            self._skipped.add(key)
        log.warning("%s: %s: left in the inbox, not read", display_name(self._relative(path), keep_folders=True), reason)

    # -- registration -------------------------------------------------------------------------

    def _registrar_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                arrival = self._registrations.get(timeout=0.2)
            except queue.Empty:
                continue
            while self._outage.wait_turn(self._stopping):
                try:
                    self._register(arrival)
                except EnvironmentFault as fault:
                    self._report(fault)
                    continue
                except Exception:
                    log.exception("could not register %s", display_name(self._relative(arrival[0]), keep_folders=True))
                break
            # Forgotten once in the queue: a rescan that offers it again while it waits finds
            # its row, and a new file that reuses the path and inode later is a new arrival.
            self._release(arrival)

    def _relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.config.inbox_dir).as_posix()
        except ValueError:
            return path.name

    def _register(self, arrival: Arrival) -> int | None:
        """Hash a complete inbox file and find or create its row; the image id if there is
        work for it in the queue."""
        path = arrival[0]
        if self.watcher is None:
            return None  # the watch was lost: the file is the new holder's
        relative = self._relative(path)
        started = time.perf_counter()
        try:
            digest: FileDigest = hash_file(path, self.config.pipeline.max_file_bytes)
        except FileNotFoundError:
            return None
        except NotRegularFile as error:  # swapped for a symlink or a FIFO since it was offered
            self._skip(path, str(error))
            return None
        except OSError as error:
            self._skip(path, f"cannot be read ({error.strerror or error})")
            return None
        hash_ms = (time.perf_counter() - started) * 1000
        inbox_path = stored_name(relative)
        identity = identity_text(digest.identity)
        known = self.writer.call(records.find_by_sha, digest.sha256)
        if known is None:
            try:
                image_id = self._insert_watched(
                    sha256=digest.sha256,
                    filename=display_name(relative, keep_folders=True),
                    inbox_path=inbox_path,
                    size_bytes=digest.size_bytes,
                    hash_ms=hash_ms,
                    source_identity=identity,
                )
            except watch_lease.LostWatch:
                log.debug("%s not registered: another process took the watch, and the file with it", relative)
                return None
            if image_id is not None:
                self.writer.call(work_queue.announce)
                self._signal.wake()
                return image_id
            known = self.writer.call(records.find_by_sha, digest.sha256)  # registered meanwhile
            if known is None:
                return None
        stored = self.config.data_dir / known.stored_path if known.stored_path else None
        if known.inbox_path is None and stored is not None and not os.path.lexists(stored):
            # The row was committed but its worker stopped before moving the file: finish that.
            with self._storage(stored):
                move_file(path, stored)
            log.info("image %d %s: original moved to the store after an interrupted run", known.id, known.filename)
            return None
        if known.status in ("pending", "processing"):
            if known.inbox_path == inbox_path:
                return None  # this very file, already in the queue
            previous = self.config.inbox_dir / real_name(known.inbox_path) if known.inbox_path else None
            if known.status == "pending" and previous is not None and not os.path.lexists(previous):
                # Its file was renamed (or a restart finds it under another name): carry on with it.
                self.writer.call(
                    records.update_image, known.id, {"inbox_path": inbox_path, "source_identity": identity}
                )
                return known.id
        self._discard_duplicate(path, relative, known, digest)
        return None

    def _insert_watched(self, **values: object) -> int | None:
        """records.insert_pending, only while this process holds the watch lease (checked in
        the insert's transaction): a holder that froze and lost it registers nothing after."""
        return self.writer.call(watch_lease.insert_if_watching, self.worker_id, **values)

    def _discard_duplicate(self, path: Path, relative: str, known: records.KnownImage, digest: FileDigest) -> None:
        shown = display_name(relative, keep_folders=True)
        if digest.over_limit:
            # Only the first max_file_bytes + 1 bytes were compared: the rest may differ, so
            # the file is kept (in failed/, as too large) rather than removed.
            reason = (
                f"too large, and the same size and first {self.config.pipeline.max_file_bytes:,} bytes as "
                f"image {known.id} ({known.filename})"
            )
            with self._failed_names:
                destination = free_name(self.config.failed_dir, _last_part(shown), digest.sha256)
                self._write_note(destination, f"{shown}: {reason}\n")
                with self._storage(destination):
                    move_file(path, destination)
            log.warning("%s: %s; moved to failed/", shown, reason)
            return
        try:
            if file_identity(path) != digest.identity:
                return  # moved to the store meanwhile, or replaced: a new file is offered again
            path.unlink()
        except FileNotFoundError:
            return
        log.info(
            "duplicate: %s has the same bytes as image %d (%s, %s); removed from the inbox",
            shown,
            known.id,
            known.filename,
            known.status,
        )

    # -- processing ---------------------------------------------------------------------------

    def _worker_loop(self) -> None:
        while self._outage.wait_turn(self._stopping):
            for claim in self._claim(PREPARE, 1):
                self._run_claim(claim)

    def _claim(self, stage: str, limit: int) -> list[Claim]:
        """Claims of `stage` from the queue; none after waiting for work to be announced (or
        after reporting a fault, which the caller's next wait_turn waits out)."""
        try:
            claims = self.writer.call_statement(
                work_queue.claim, self.worker_id, stage=stage, limit=limit, lease_s=self.config.pipeline.lease_s
            )
        except EnvironmentFault as fault:
            self._report(fault)
            return []
        if not claims:
            self._signal.wait()
        self._claims.hold(claim.image.id for claim in claims)
        return claims

    def _run_claim(self, claim: Claim) -> None:
        """Process one claimed image, whatever happens: an outcome, or the claim given back."""
        with self._state:
            self._outstanding += 1
        job = self._job_or_give_back(claim)
        if job is None:
            self._release()
            return
        started = time.perf_counter()
        taken_over = False
        try:
            taken_over = self._process(job, started)
        except EnvironmentFault as fault:
            self._report(fault)
            self._give_back(job)
        except DecodeStopped:  # stopping while it waited for decode memory: the next start takes it
            self._give_back(job)
        except Exception:
            self._record_internal_error(job, started)
        finally:
            if not taken_over:
                self._release_job(job)

    def _job_or_give_back(self, claim: Claim) -> Job | None:
        """The job of a claim, or None, the claim ended: nothing to process, or given back
        because a fault of the environment stopped even finding out."""
        try:
            job = self._job_for(claim)
        except EnvironmentFault as fault:
            self._report(fault)
            self._release_claim(claim.image.id, {})
            job = None
        if job is None:
            self._claims.let_go(claim.image.id)
        return job

    def _job_for(self, claim: Claim) -> Job | None:
        """Where a claimed image's bytes are, and whether they are still the bytes hashed; None
        when there is nothing to process (recorded as missing, or dropped as rewritten)."""
        known = claim.image
        earlier_ms = claim.processing_ms if claim.stage == CAPTION and claim.processing_ms else known.hash_ms or 0.0
        if known.inbox_path is not None:
            source = self.config.inbox_dir / real_name(known.inbox_path)
        elif known.stored_path is not None:
            source = self.config.data_dir / known.stored_path
        else:
            source = None
        try:
            identity = file_identity(source) if source is not None else None
        except OSError:
            identity = None
        if source is None or identity is None:
            self._record_missing(known)
            return None
        arrival = (source, identity[0]) if known.inbox_path is not None else None
        job = Job(known.id, known.sha256, known.size_bytes, earlier_ms, known.filename, source, arrival, identity)
        if arrival is not None and claim.source_identity not in (None, identity_text(identity)):
            # Rewritten since it was hashed: these are not the bytes of this row. The watcher
            # registers the new bytes (the change was an event, and a rescan sees it too).
            self._drop_rewritten(job)
            return None
        return job

    def _record_missing(self, known: records.KnownImage) -> None:
        if known.inbox_path is not None or known.stored_path is None:
            self._finish_missing(known, records.failure_values(MissingFile()))
        elif known.error_kind is not None:
            # Failed before and queued again: its first reason is what is wrong with the image.
            # The stored path stays, so the same bytes dropped again go back in their place.
            self._finish_missing(known, {"status": "failed", "stage": None, "inbox_path": None, "processed_at": records.utcnow()})
        else:
            # Done before: a failed image has no thumbnails (the API answers so for it), and the
            # caption and metadata stay as they were read from the same bytes.
            values = records.failure_values(OriginalGone()) | {"stage": None} | records.NO_THUMBNAILS
            if self._finish_missing(known, values):
                self._remove_thumbnails(known.sha256)

    def _finish_missing(self, known: records.KnownImage, values: dict) -> bool:
        if not self.writer.call_statement(work_queue.finish, self.worker_id, known.id, values | self._by_me()):
            return False
        log.warning("image %d %s: failed: %s", known.id, known.filename, values.get("error") or OriginalGone().message)
        return True

    def _remove_thumbnails(self, sha256: str) -> None:
        for thumbnail in (self.config.thumbnails_dir / sha256[:2]).glob(f"{sha256}-*"):
            thumbnail.unlink(missing_ok=True)

    def _by_me(self) -> dict[str, str]:
        return {"processed_by": self.worker_name}

    def _give_back(self, job: Job) -> None:
        """A fault of the environment, or a stop, interrupted this image: back to pending, with
        where its bytes are now, to be claimed again (by any worker) once the fault is gone."""
        if job.arrival is not None:
            values = {"inbox_path": stored_name(self._relative(job.source)), "stored_path": None}
        else:
            values = {"inbox_path": None, "stored_path": job.source.relative_to(self.config.data_dir).as_posix()}
        self._release_claim(job.image_id, values)

    def _release_claim(self, image_id: int, values: dict) -> None:
        """Back to pending, untouched but for `values`; when the fault that interrupted it
        stops this too, owed, and given back once the fault is gone (the lease thread)."""
        try:
            self.writer.call_statement(work_queue.release, self.worker_id, [image_id], values)
        except EnvironmentFault as fault:
            self._report(fault)
            self._claims.owe(image_id, values)
            return
        self._signal.wake()

    def _release_job(self, job: Job) -> None:
        self._claims.let_go(job.image_id)
        if job.arrival is not None:
            with self._state:
                self._arrivals.discard(job.arrival)
        self._release()
        watcher = self.watcher
        if watcher is not None and job.arrival is not None and os.path.lexists(job.source):
            # Still in the inbox: rewritten while processed. Its events were ignored while this
            # job held it, so look at it again once its writer is done.
            watcher.recheck(job.source)

    def _record_internal_error(self, job: Job, started: float) -> None:
        """A bug, not a bad file (those are PipelineErrors): record it and keep going."""
        log.exception("image %d %s: unexpected error", job.image_id, job.filename)
        self._fail_safely(job, PipelineError("internal error while processing this image"), started)

    def _process(self, job: Job, started: float) -> bool:
        """Run the stages; True if the caption worker has taken the image over (it finishes or
        hands back the image, and releases it). EnvironmentFault: nothing was recorded."""
        try:
            with self._counted_as_preparing(), self._storage(self.config.thumbnails_dir):
                prepared = prepare(
                    job.source,
                    sha256=job.sha256,
                    size_bytes=job.size_bytes,
                    config=self.config,
                    caption_size=self.captioner.input_size,
                    budget=self._budget,
                )
        except PipelineError as error:
            self._fail(job, error, started)
            return False
        values = records.prepared_values(prepared)
        if self.captioner.input_size is None or prepared.caption_input is None:
            self._finish(job, prepared.metadata.format, started, values | records.caption_values(None))
            return False
        if self._captions is None or not self._captions.ready:
            # No model here, or not yet (it loads, or compiles on a first start): the image is
            # done without waiting for it, and captioned from the store once a model is ready.
            self._hand_to_captions(job, prepared.metadata.format, started, values)
            return False
        # Metadata and thumbnails are visible now; the caption follows when the model gets to it.
        self.writer.call(records.update_image, job.image_id, values)
        task = CaptionTask(job, prepared.metadata.format, started)
        if not self._captions.submit(prepared.caption_input, task):
            self._caption_handed_back(task)  # stopping
        return True

    @contextmanager
    def _counted_as_preparing(self) -> Iterator[None]:
        counted = self._captions is not None and self._captions.ready
        if counted:
            with self._state:
                self._preparing += 1
        try:
            yield
        finally:
            if counted:
                with self._state:
                    self._preparing -= 1

    def _hand_to_captions(self, job: Job, image_format: str, started: float, values: dict) -> None:
        """Metadata and thumbnails done, the caption left to the caption stage (a process with
        that role, or this one once its model is ready): the image is done, its caption to
        come; the original goes to the store, where the caption stage reads it."""
        outcome = {"status": "done", "stage": CAPTION, "error": None, "error_kind": None, "caption_error": None, "processed_at": records.utcnow()}
        processing_ms = self._record_and_store(job, image_format, started, values | outcome)
        if processing_ms is not None:
            self.writer.call(work_queue.announce)
            log.info("image %d %s: done in %.0f ms, its caption to come", job.image_id, job.filename, processing_ms)

    # -- captions -----------------------------------------------------------------------------

    def _caption_feeder_loop(self) -> None:
        """Claim images waiting for their caption (from thumbnails-only workers, or given back)
        and hand them to the caption worker, a batch at a time."""
        assert self._captions is not None
        batch_size = self.config.caption.batch_size
        while self._outage.wait_turn(self._stopping):
            if not self._captions.ready_for(batch_size):
                self._stopping.wait(0.05)
                continue
            for claim in self._claim(CAPTION, batch_size):
                self._feed_caption(claim)

    def _captions_off_loop(self) -> None:
        while self._outage.wait_turn(self._stopping):
            for claim in self._claim(CAPTION, CAPTIONS_OFF_BATCH):
                self._done_without_caption(claim)

    def _done_without_caption(self, claim: Claim) -> None:
        with self._state:
            self._outstanding += 1
        try:
            self.writer.call_statement(work_queue.finish, self.worker_id, claim.image.id, {"stage": None, "status": "done"} | self._by_me())
        except EnvironmentFault as fault:
            self._report(fault)
            self._release_claim(claim.image.id, {})
        finally:
            self._claims.let_go(claim.image.id)
            self._release()

    def _feed_caption(self, claim: Claim) -> None:
        assert self._captions is not None
        with self._state:
            self._outstanding += 1
        job = self._job_or_give_back(claim)
        if job is None:
            self._release()
            return
        started = time.perf_counter()
        stored = records.StoredImage(job.image_id, job.filename, claim.image.stored_path or "", job.size_bytes)
        try:
            with self._storage(job.source):
                image = caption_input(self.config, stored, self.captioner.input_size or 0)
        except PipelineError as error:
            self._fail_safely(job, error, started)
            self._release_job(job)
            return
        except EnvironmentFault as fault:
            self._report(fault)
            self._give_back(job)
            self._release_job(job)
            return
        except Exception:
            self._record_internal_error(job, started)
            self._release_job(job)
            return
        task = CaptionTask(job, None, started)
        if not self._captions.submit(image, task):
            self._caption_handed_back(task)  # stopping

    def _caption_done(self, task: CaptionTask, outcome: CaptionOutcome) -> None:
        """The caption worker's result for one image: commit it as done, move the original."""
        values = records.caption_values(
            outcome.caption,
            error=outcome.error,
            caption_ms=outcome.caption_ms,
            model=self.captioner.model_name,
            device=self.captioner.device,
            runtime=self.captioner.runtime,
        )
        try:
            self._finish(task.job, task.image_format, task.started, values)
        except EnvironmentFault as fault:
            self._report(fault)
            self._give_back(task.job)  # captioned again once the fault is gone
        except Exception:
            self._record_internal_error(task.job, task.started)
        self._release_job(task.job)

    def _caption_handed_back(self, task: CaptionTask) -> None:
        """Stopping before its caption: back to `pending`, claimed again at the next start."""
        try:
            self._release_claim(task.job.image_id, {})
        except Exception:
            log.exception("image %d %s: could not put it back in the queue", task.job.image_id, task.job.filename)
        finally:
            self._release_job(task.job)

    # -- outcomes -----------------------------------------------------------------------------

    def _elapsed_ms(self, job: Job, started: float) -> float:
        return job.earlier_ms + (time.perf_counter() - started) * 1000

    def _source_changed(self, job: Job) -> bool:
        """Whether the inbox file is no longer the bytes that were hashed and processed."""
        if job.arrival is None:
            return False
        try:
            return file_identity(job.source) != job.identity
        except OSError:
            return True

    def _superseded(self, job: Job) -> bool:
        """If the inbox file was rewritten while processed (a writer that appends and closes in
        turns), drop the row of the bytes that no longer exist: the new bytes get their own, so
        one image makes one record. True if dropped."""
        if not self._source_changed(job):
            return False
        try:
            if not stat.S_ISREG(os.lstat(job.source).st_mode):
                return False
        except OSError:
            return False  # deleted: recorded as missing
        self._drop_rewritten(job)
        return True

    def _still_the_hashed_bytes(self, job: Job, started: float) -> bool:
        """Whether the inbox file still holds the bytes processed; if not, the image is dropped
        (rewritten: its new bytes are registered) or failed (gone or replaced), and False."""
        if self._superseded(job):
            return False
        if self._source_changed(job):
            self._fail(job, SourceChanged(), started)
            return False
        return True

    def _drop_rewritten(self, job: Job) -> None:
        if not self.writer.call_statement(work_queue.drop, self.worker_id, job.image_id):
            return
        self._remove_thumbnails(job.sha256)
        log.info("image %d %s: rewritten since it was hashed; the new content is taken instead", job.image_id, job.filename)
        watcher = self.watcher
        if watcher is not None:
            watcher.recheck(job.source)

    def _record(self, job: Job, values: dict) -> bool:
        """Write an outcome while this process holds the claim; False (and nothing written)
        if it lost it: its lease ran out (a stall, a lost connection) and another worker took
        the image, which records it instead."""
        if self.writer.call_statement(work_queue.finish, self.worker_id, job.image_id, values | self._by_me()):
            return True
        log.warning("image %d %s: another worker took it over (this one's claim ran out); nothing recorded here", job.image_id, job.filename)
        return False

    def _stored_path(self, job: Job, image_format: str | None) -> str:
        """Where the original goes in the content-addressed store (relative to the data folder);
        an image handed over for its caption is there already."""
        if image_format is None:
            return job.source.relative_to(self.config.data_dir).as_posix()
        return f"originals/{job.sha256[:2]}/{job.sha256}.{EXTENSIONS[image_format]}"

    def _record_and_store(self, job: Job, image_format: str | None, started: float, outcome: dict) -> float | None:
        """Commit `outcome` with the time spent and the original's place in the store, then move
        the original there; the time, or None when nothing was recorded (the inbox file no longer
        holds the bytes processed, or the claim was lost)."""
        if not self._still_the_hashed_bytes(job, started):
            return None
        stored_path = self._stored_path(job, image_format)
        processing_ms = self._elapsed_ms(job, started)
        if not self._record(job, outcome | {"stored_path": stored_path, "inbox_path": None, "processing_ms": processing_ms}):
            return None
        self._store(job.source, self.config.data_dir / stored_path)
        return processing_ms

    def _finish(self, job: Job, image_format: str | None, started: float, values: dict) -> None:
        """Commit a done image with `values`, then move its original into the content-addressed store."""
        done = {"status": "done", "stage": None, "error": None, "error_kind": None, "processed_at": records.utcnow()}
        processing_ms = self._record_and_store(job, image_format, started, values | done)
        if processing_ms is None:
            return
        if job.source.parent == self.config.failed_dir:  # reprocessed: the old reason is stale
            error_note(job.source).unlink(missing_ok=True)
        log.info("image %d %s: done in %.0f ms", job.image_id, job.filename, processing_ms)

    def _fail(self, job: Job, error: PipelineError, started: float) -> None:
        """Commit a failed image, then move its file to failed/ beside a note of the reason."""
        if self._superseded(job):
            return
        processing_ms = self._elapsed_ms(job, started)
        if not isinstance(error, MissingFile) and self._source_changed(job):
            error = SourceChanged()
        values = records.failure_values(error) | {"processing_ms": processing_ms, "stage": None}
        with self._failed_names:
            if isinstance(error, MissingFile):
                destination = None
            elif job.source.parent == self.config.failed_dir:
                destination = job.source  # reprocessed from failed/ and failed again
            else:
                destination = free_name(self.config.failed_dir, _last_part(job.filename), job.sha256)
            if destination is not None:
                values["stored_path"] = destination.relative_to(self.config.data_dir).as_posix()
            if not self._record(job, values):
                return
            if destination is not None:
                self._write_note(destination, f"image {job.image_id} ({job.filename}, sha256 {job.sha256}): {error.message}\n")
                self._store(job.source, destination)
        log.warning("image %d %s: failed in %.0f ms: %s", job.image_id, job.filename, processing_ms, error.message)

    def _fail_safely(self, job: Job, error: PipelineError, started: float) -> None:
        try:
            self._fail(job, error, started)
        except EnvironmentFault as fault:
            self._report(fault)
            self._give_back(job)  # failed again once the fault is gone
        except Exception:
            log.exception("image %d %s: could not record the failure", job.image_id, job.filename)

    @contextmanager
    def _storage(self, destination: Path) -> Iterator[None]:
        """Writing into the data folder: an OSError here is the machine's fault, not the image's."""
        try:
            yield
        except OSError as error:
            raise storage_fault(error, self._folder_name(destination)) from error

    def _write_note(self, failed_file: Path, text: str) -> None:
        note = error_note(failed_file)
        with self._storage(note):
            note.parent.mkdir(parents=True, exist_ok=True)
            note.write_text(text, errors="backslashreplace")

    def _store(self, source: Path, destination: Path) -> None:
        if source == destination:
            return
        if os.path.lexists(destination):
            source.unlink(missing_ok=True)  # the same bytes are already stored
            return
        try:
            with self._storage(destination):
                move_file(source, destination)
        except EnvironmentFault:
            if os.path.lexists(source):
                raise
            # Its row is committed: what is lost is the copy someone deleted from the inbox.
            log.warning("%s left the inbox before it could be stored", display_name(source.name))


def _last_part(filename: str) -> str:
    """The name in a display name with folders ("2024/trip/a.jpg" -> "a.jpg")."""
    return filename.rsplit("/", 1)[-1]


def _process_alive(pid: int) -> bool:
    """Whether a process of this machine with this pid runs (a recycled pid counts as alive:
    its claims then wait for their lease to run out)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
