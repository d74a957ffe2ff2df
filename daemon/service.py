"""The daemon: registers complete files, runs the pipeline on a small pool, records outcomes.

Threads, each with one job:
- the watcher's tracker and watchdog's observer find complete files and `offer` them;
- the registrar hashes each file and creates (or finds) its row, so a new file has an id
  within milliseconds, however long the queue of work is;
- `pipeline.workers` workers run the stages and record the outcome, or, when a caption model
  is configured, record metadata and thumbnails and hand the image to the caption worker;
- the caption worker loads the model in the background, captions images in batches, and
  records each image's final outcome;
- the database writer applies every write, one transaction at a time.

Crash safety: a row is committed before its file moves; on start, rows left `processing`
go back to `pending`, and a file found in the inbox whose bytes already have a record is either
a duplicate (removed) or the original of that record that a crash left behind (moved on).

Only regular files are read, never through a symlink (daemon.files.open_regular): anything
else in the inbox is named once in the log and left alone. A fault of the machine (a full
disk, a data folder that cannot be written, a database that cannot be written) is never the
image's: the image goes back to `pending` and every thread waits it out (daemon.outage).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from daemon import records
from daemon.caption_worker import CaptionOutcome, CaptionWorker
from daemon.captioner import Captioner, make_captioner
from daemon.decode import EXTENSIONS, configure_pillow
from daemon.errors import (
    EnvironmentFault,
    MissingFile,
    NotRegularFile,
    PipelineError,
    SourceChanged,
    database_fault,
    storage_fault,
)
from daemon.files import (
    FileDigest,
    error_note,
    file_identity,
    file_kind,
    free_name,
    hash_file,
    move_file,
    remove_stale_temporaries,
)
from daemon.memory_budget import DecodeBudget, DecodeStopped
from daemon.notify import SystemdNotifier
from daemon.outage import Outage
from daemon.pipeline import prepare
from daemon.watcher import InboxWatcher
from daemon.writer import DatabaseWriter
from models import migrate
from models.config import Config
from models.db import make_engine
from models.diskspace import data_disk_problem
from models.names import display_name, real_name, stored_name

log = logging.getLogger("htx.daemon")

HEARTBEAT_S = 5.0
# Files skipped (not regular, unreadable) are named once each; past this many remembered, the
# memory is cleared and a file may be named once more.
MAX_SKIPPED_REMEMBERED = 10_000


# A file that arrived in the inbox: its path and inode. A new file at the same path (an upload
# renamed in as the last one with that name leaves) is another arrival.
Arrival = tuple[Path, int]


@dataclass(frozen=True)
class Job:
    """One registered image waiting for the pipeline."""

    image_id: int
    sha256: str
    size_bytes: int
    hash_ms: float
    filename: str
    source: Path  # where its bytes are now
    arrival: Arrival | None  # None when the source is in the store (reprocessing)
    identity: tuple[int, int, int]  # of the source when hashed: inode, size, mtime
    held: bool = False  # held back by a fault of the environment: its row may be `processing`


@dataclass(frozen=True)
class CaptionTask:
    """A job waiting for its caption: metadata and thumbnails are already committed."""

    job: Job
    image_format: str
    started: float  # perf_counter at claim, for processing_ms


class Daemon:
    def __init__(self, config: Config, captioner: Captioner | None = None, *, observe: bool = True) -> None:
        self.config = config
        self.captioner: Captioner = captioner if captioner is not None else make_captioner(config)
        self.engine = make_engine(config.database_url)
        self.writer = DatabaseWriter(self.engine)
        self.watcher = InboxWatcher(config.inbox_dir, config.watch, self.offer, observe=observe)
        self._worker_count = config.pipeline.workers or os.cpu_count() or 1
        self._captions: CaptionWorker | None = None
        if self.captioner.input_size is not None:
            self._captions = CaptionWorker(
                self.captioner,
                batch_size=config.caption.batch_size,
                batch_wait_ms=config.caption.batch_wait_ms,
                finish=self._caption_done,
                hand_back=self._caption_handed_back,
                on_status=lambda _status: self._try_heartbeat(),
            )
        self._registrations: queue.Queue[Path] = queue.Queue()
        self._jobs: queue.Queue[Job] = queue.Queue()
        self._stopping = threading.Event()
        # Decoded pixels held at once by all workers: large images wait their turn.
        self._budget = DecodeBudget(config.pipeline.decode_memory_mb * 1024 * 1024, stop=self._stopping)
        self._threads: list[threading.Thread] = []
        self._started_at = records.utcnow()
        # Work known to the daemon and not finished: paths offered, image ids queued.
        self._state = threading.Condition()
        self._arrivals: set[Arrival] = set()
        self._active_ids: set[int] = set()
        self._outstanding = 0
        # Names in failed/ are picked and used under this lock, so two failures never share one.
        self._failed_names = threading.Lock()
        self._outage = Outage(self._check_environment, on_change=lambda _problem: self._try_heartbeat())
        self._skipped: set[tuple[Path, int, int, str]] = set()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, stop: threading.Event | None = None) -> bool:
        """Prepare the data folder and database, then start every thread and scan the inbox.

        With `stop`, a fault of the environment (a full disk, a locked database) is waited out
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
        if self._captions is not None:
            self._captions.start()  # loads the model in the background; images queue meanwhile
        self._spawn("htx-registrar", self._registrar_loop)
        for number in range(self._worker_count):
            self._spawn(f"htx-worker-{number}", self._worker_loop)
        self._queue_pending_images()
        self.watcher.start()
        found = self.watcher.scan()
        log.info(
            "watching %s (%s, %d worker(s)); %d file(s) already in the inbox",
            self.config.inbox_dir,
            self.watcher.mode,
            self._worker_count,
            found,
        )
        return True

    def _folders(self) -> list[Path]:
        config = self.config
        return [config.inbox_dir, config.uploads_dir, config.originals_dir, config.thumbnails_dir, config.failed_dir]

    def _prepare(self) -> None:
        """Folders, database schema, and the rows a crash left behind; EnvironmentFault if the
        machine does not allow it yet."""
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
        interrupted = self.writer.call(records.reset_interrupted)
        if interrupted:
            log.info("%d image(s) interrupted by a stop or crash are queued again", interrupted)
        self.heartbeat()

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
        """Stop taking work, let each thread finish the image in hand, then close the database."""
        self.watcher.stop()
        self._stopping.set()
        if self._captions is not None:
            # Cuts the batch in hand short; it and the images still waiting go back to pending.
            self._captions.stop()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self.writer.running:
            try:
                self.writer.call(records.write_stopped)
            except EnvironmentFault as fault:
                log.warning("could not record the stop (%s): readers see the daemon as stale in a while", fault)
        self.writer.stop()
        self.engine.dispose()

    @property
    def model_still_loading(self) -> bool:
        """After `stop`: the caption model's loading thread, not waited for, still runs."""
        return self._captions is not None and self._captions.running

    def run(self, stop: threading.Event, notifier: SystemdNotifier | None = None) -> None:
        """Serve until `stop` is set: heartbeat, rescan the inbox every `watch.rescan_s`, and
        queue images someone asked to reprocess.

        With systemd, says READY=1 now and WATCHDOG=1 after every heartbeat: the heartbeat goes
        through the database writer, so a stuck writer also stops the pings and gets the daemon
        restarted.
        """
        notifier = notifier or SystemdNotifier(None)
        interval = HEARTBEAT_S
        if notifier.watchdog_interval_s:
            interval = min(interval, notifier.watchdog_interval_s / 2)
        notifier.ready(f"watching {self.config.inbox_dir} ({self.watcher.mode})")
        rescan_s = self.config.watch.rescan_s or float("inf")
        next_rescan = time.monotonic() + rescan_s
        while not stop.wait(min(interval, max(0.0, next_rescan - time.monotonic()))):
            # systemd's watchdog is fed only when the database took the heartbeat: a daemon that
            # cannot write it for long is restarted, which is what that setting asks for.
            if self._try_heartbeat():
                notifier.watchdog()
            if self._outage.problem is None:
                try:
                    self._queue_pending_images(stored_only=True)
                except EnvironmentFault as fault:
                    self._report(fault)
            if time.monotonic() >= next_rescan:
                found = self.watcher.scan()
                log.debug("rescanned the inbox: %d file(s)", found)
                next_rescan = time.monotonic() + rescan_s
        notifier.stopping()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every file seen so far is finished; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            with self._state:
                self._state.wait_for(lambda: self._outstanding == 0, timeout=0.1)
            # Checked outside the lock: the tracker takes its own lock, then calls `offer`.
            if self.watcher.settling() == 0:
                with self._state:
                    if self._outstanding == 0:
                        return True
        return False

    def process_now(self, path: Path) -> int | None:
        """Register and process one inbox file on the calling thread; its image id, if any.

        For tools and benchmarks: the same code path as the workers, without the queues.
        """
        arrival = (path, path.stat().st_ino)
        with self._state:
            self._arrivals.add(arrival)
            self._outstanding += 1
        job = self._register(arrival)
        if job is None:
            self._release(arrival)
            return None
        taken_over = False
        try:
            taken_over = self._process(job)  # with a caption model, the caption worker finishes it
        finally:
            if not taken_over:
                self._release(arrival, job.image_id)
        return job.image_id

    def heartbeat(self) -> None:
        """Say in the database that the daemon is alive, with what it runs and waits out."""
        self.writer.call(
            records.write_heartbeat,
            pid=os.getpid(),
            started_at=self._started_at,
            caption_model=self.captioner.model_name,
            caption_device=self.captioner.device,
            caption_status=self.caption_status,
            problem=self._outage.problem,
        )

    def _report(self, fault: EnvironmentFault) -> None:
        """Hold work back for `fault`; named for its cause when that is a full data disk, which
        SQLite reports as an I/O error when it cannot even make its journal files."""
        problem = data_disk_problem(self.config.data_dir)
        if problem is not None and problem != fault.problem:
            fault = EnvironmentFault(problem, fault.detail)
        self._outage.report(fault)

    def _try_heartbeat(self) -> bool:
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

    def _activate(self, image_id: int) -> bool:
        """Mark an image as queued or in progress; False if it already is."""
        with self._state:
            if image_id in self._active_ids:
                return False
            self._active_ids.add(image_id)
            return True

    def _release(self, arrival: Arrival | None = None, image_id: int | None = None, *, counted: bool = True) -> None:
        with self._state:
            if arrival is not None:
                self._arrivals.discard(arrival)
            if image_id is not None:
                self._active_ids.discard(image_id)
            if counted:
                self._outstanding -= 1
            self._state.notify_all()

    def _queue_pending_images(self, *, stored_only: bool = False) -> None:
        """Queue `pending` rows that no thread holds: those an earlier run left (at start), and
        those `htx reprocess` marked (`stored_only`: their bytes are in the store, not the inbox,
        so they cannot race with a registration in progress)."""
        for known in self.writer.call(records.pending_images, stored_only=stored_only):
            if known.inbox_path is not None:
                source = self.config.inbox_dir / real_name(known.inbox_path)
            elif known.stored_path is not None:
                source = self.config.data_dir / known.stored_path
            else:
                source = None
            if not self._activate(known.id):
                continue
            try:
                identity = file_identity(source) if source is not None else None
            except OSError:
                identity = None
            if source is None or identity is None:
                self._record_missing(known)
                self._release(image_id=known.id, counted=False)
                continue
            arrival = (source, identity[0]) if known.inbox_path is not None else None
            with self._state:
                self._outstanding += 1
                if arrival is not None:
                    self._arrivals.add(arrival)
            self._jobs.put(
                Job(known.id, known.sha256, known.size_bytes, known.hash_ms or 0.0, known.filename, source, arrival, identity)
            )

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

    def _record_missing(self, known: records.KnownImage) -> None:
        error = MissingFile()
        self.writer.call(records.update_image, known.id, records.failure_values(error))
        log.warning("image %d %s: failed: %s", known.id, known.filename, error.message)

    # -- registration -------------------------------------------------------------------------

    def _registrar_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                arrival = self._registrations.get(timeout=0.2)
            except queue.Empty:
                continue
            job = None
            while self._outage.wait_turn(self._stopping):
                try:
                    job = self._register(arrival)
                except EnvironmentFault as fault:
                    self._report(fault)
                    continue
                except Exception:
                    log.exception("could not register %s", display_name(self._relative(arrival[0]), keep_folders=True))
                break
            if job is None:
                self._release(arrival)
            else:
                self._jobs.put(job)

    def _relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.config.inbox_dir).as_posix()
        except ValueError:
            return path.name

    def _register(self, arrival: Arrival) -> Job | None:
        """Hash a complete inbox file and find or create its row; a Job if there is work to do."""
        path = arrival[0]
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
        known = self.writer.call(records.find_by_sha, digest.sha256)
        if known is None:
            filename = display_name(relative, keep_folders=True)
            image_id = self.writer.call(
                records.insert_pending,
                sha256=digest.sha256,
                filename=filename,
                inbox_path=inbox_path,
                size_bytes=digest.size_bytes,
                hash_ms=hash_ms,
            )
            self._activate(image_id)
            return Job(image_id, digest.sha256, digest.size_bytes, hash_ms, filename, path, arrival, digest.identity)
        if known.status in ("pending", "processing"):
            if not self._activate(known.id):
                if known.inbox_path != inbox_path:
                    self._discard_duplicate(path, relative, known, digest)
                return None
            # A row from before a restart whose file this is: carry on with it.
            self.writer.call(records.update_image, known.id, {"inbox_path": inbox_path})
            return Job(known.id, known.sha256, known.size_bytes, hash_ms, known.filename, path, arrival, digest.identity)
        stored = self.config.data_dir / known.stored_path if known.stored_path else None
        if stored is not None and not os.path.lexists(stored):
            # The row was committed but the daemon stopped before moving the file: finish that.
            with self._storage(stored):
                move_file(path, stored)
            log.info("image %d %s: original moved to the store after an interrupted run", known.id, known.filename)
            return None
        self._discard_duplicate(path, relative, known, digest)
        return None

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
        path.unlink(missing_ok=True)
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
            try:
                job = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            taken_over = False
            try:
                taken_over = self._process(job)
            except EnvironmentFault as fault:
                self._report(fault)
                self._hold(job)
                taken_over = True  # held, not released
            except DecodeStopped:  # stopping while it waited for decode memory: the next start takes it
                self._back_to_pending(job)
            except Exception:
                self._record_internal_error(job, time.perf_counter())
            finally:
                if not taken_over:
                    self._release_job(job)

    def _hold(self, job: Job) -> None:
        """A fault of the environment stopped this image: back to `pending`, and into the queue
        again, to be taken once the fault is gone."""
        self._back_to_pending(job)
        self._jobs.put(dataclasses.replace(job, held=True))

    def _back_to_pending(self, job: Job) -> None:
        source = job.source
        if job.arrival is not None:
            values = {"inbox_path": stored_name(self._relative(source)), "stored_path": None}
        else:
            values = {"inbox_path": None, "stored_path": source.relative_to(self.config.data_dir).as_posix()}
        try:
            self.writer.call(records.back_to_pending, job.image_id, **values)
        except EnvironmentFault:
            pass  # the row stays `processing` until a retry claims it again, or a restart resets it

    def _release_job(self, job: Job) -> None:
        self._release(job.arrival, job.image_id)
        if job.arrival is not None and os.path.lexists(job.source):
            # Still in the inbox: rewritten while processed. Its events were ignored while this
            # job held it, so look at it again once its writer is done.
            self.watcher.recheck(job.source)

    def _record_internal_error(self, job: Job, started: float) -> None:
        """A bug, not a bad file (those are PipelineErrors): record it and keep going."""
        log.exception("image %d %s: unexpected error", job.image_id, job.filename)
        self._fail_safely(job, PipelineError("internal error while processing this image"), started)

    def _process(self, job: Job) -> bool:
        """Run the stages; True if the caption path has taken the image over (it finishes or
        hands back the image, and releases it). EnvironmentFault: nothing was recorded."""
        if not self.writer.call(records.claim, job.image_id, resume=job.held):
            return False
        started = time.perf_counter()
        try:
            with self._storage(self.config.thumbnails_dir):
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
        if self._captions is None or prepared.caption_input is None:
            self._finish(job, prepared.metadata.format, started, values | records.caption_values(None))
            return False
        # Metadata and thumbnails are visible now; the caption follows when the model gets to it.
        self.writer.call(records.update_image, job.image_id, values)
        task = CaptionTask(job, prepared.metadata.format, started)
        if not self._captions.submit(prepared.caption_input, task):
            self._caption_handed_back(task)  # stopping
        return True

    def _caption_done(self, task: CaptionTask, outcome: CaptionOutcome) -> None:
        """The caption worker's result for one image: commit it as done, move the original."""
        values = records.caption_values(
            outcome.caption,
            error=outcome.error,
            caption_ms=outcome.caption_ms,
            model=self.captioner.model_name,
            device=self.captioner.device,
        )
        try:
            self._finish(task.job, task.image_format, task.started, values)
        except EnvironmentFault as fault:
            self._report(fault)
            self._hold(task.job)  # made again, caption too, once the fault is gone
            return
        except Exception:
            self._record_internal_error(task.job, task.started)
        self._release_job(task.job)

    def _caption_handed_back(self, task: CaptionTask) -> None:
        """Stopping before its caption: back to `pending`, processed again at the next start."""
        try:
            self.writer.call(records.update_image, task.job.image_id, {"status": "pending"})
        except EnvironmentFault as fault:
            log.warning("image %d: still marked processing (%s); the next start queues it again", task.job.image_id, fault)
        except Exception:
            log.exception("image %d %s: could not put it back in the queue", task.job.image_id, task.job.filename)
        finally:
            self._release_job(task.job)

    def _elapsed_ms(self, job: Job, started: float) -> float:
        return job.hash_ms + (time.perf_counter() - started) * 1000

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
        self.writer.call(records.delete_image, job.image_id)
        for thumbnail in (self.config.thumbnails_dir / job.sha256[:2]).glob(f"{job.sha256}-*"):
            thumbnail.unlink(missing_ok=True)
        log.info("image %d %s: rewritten while it was processed; the new content is taken instead", job.image_id, job.filename)
        return True

    def _finish(self, job: Job, image_format: str, started: float, values: dict) -> None:
        """Commit a done image with `values`, then move its original into the content-addressed store."""
        if self._superseded(job):
            return
        if self._source_changed(job):
            self._fail(job, SourceChanged(), started)
            return
        extension = EXTENSIONS[image_format]
        stored_path = f"originals/{job.sha256[:2]}/{job.sha256}.{extension}"
        processing_ms = self._elapsed_ms(job, started)
        values = values | {
            "status": "done",
            "error": None,
            "error_kind": None,
            "processed_at": records.utcnow(),
            "stored_path": stored_path,
            "inbox_path": None,
            "processing_ms": processing_ms,
        }
        self.writer.call(records.update_image, job.image_id, values)
        self._store(job.source, self.config.data_dir / stored_path)
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
        values = records.failure_values(error) | {"processing_ms": processing_ms}
        with self._failed_names:
            if isinstance(error, MissingFile):
                destination = None
            elif job.source.parent == self.config.failed_dir:
                destination = job.source  # reprocessed from failed/ and failed again
            else:
                destination = free_name(self.config.failed_dir, _last_part(job.filename), job.sha256)
            if destination is not None:
                values["stored_path"] = destination.relative_to(self.config.data_dir).as_posix()
            self.writer.call(records.update_image, job.image_id, values)
            if destination is not None:
                self._write_note(destination, f"image {job.image_id} ({job.filename}, sha256 {job.sha256}): {error.message}\n")
                self._store(job.source, destination)
        log.warning("image %d %s: failed in %.0f ms: %s", job.image_id, job.filename, processing_ms, error.message)

    def _fail_safely(self, job: Job, error: PipelineError, started: float) -> None:
        try:
            self._fail(job, error, started)
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
