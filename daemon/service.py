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
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from daemon import records
from daemon.caption_worker import CaptionOutcome, CaptionWorker
from daemon.captioner import Captioner, make_captioner
from daemon.decode import EXTENSIONS, configure_pillow
from daemon.errors import MissingFile, PipelineError, SourceChanged
from daemon.files import FileDigest, file_identity, free_name, hash_file, move_file
from daemon.notify import SystemdNotifier
from daemon.pipeline import prepare
from daemon.watcher import InboxWatcher
from daemon.writer import DatabaseWriter
from models import migrate
from models.config import Config
from models.db import make_engine
from models.names import display_name

log = logging.getLogger("htx.daemon")

HEARTBEAT_S = 5.0


def _error_note(failed_file: Path) -> Path:
    return failed_file.with_name(failed_file.name + ".error.txt")


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
                on_status=lambda _status: self.heartbeat(),
            )
        self._registrations: queue.Queue[Path] = queue.Queue()
        self._jobs: queue.Queue[Job] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at = records.utcnow()
        # Work known to the daemon and not finished: paths offered, image ids queued.
        self._state = threading.Condition()
        self._arrivals: set[Arrival] = set()
        self._active_ids: set[int] = set()
        self._outstanding = 0
        # Names in failed/ are picked and used under this lock, so two failures never share one.
        self._failed_names = threading.Lock()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Prepare the data folder and database, then start every thread and scan the inbox."""
        for folder in (
            self.config.inbox_dir,
            self.config.uploads_dir,
            self.config.originals_dir,
            self.config.thumbnails_dir,
            self.config.failed_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        configure_pillow(self.config.pipeline.max_pixels)
        migrate.upgrade(self.engine)
        self.writer.start()
        interrupted = self.writer.call(records.reset_interrupted)
        if interrupted:
            log.info("%d image(s) interrupted by a stop or crash are queued again", interrupted)
        self.heartbeat()
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
            self.heartbeat()
            notifier.watchdog()
            self._queue_pending_images(stored_only=True)
            if time.monotonic() >= next_rescan:
                self.watcher.scan()
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
        self.writer.call(
            records.write_heartbeat,
            pid=os.getpid(),
            started_at=self._started_at,
            caption_model=self.captioner.model_name,
            caption_device=self.captioner.device,
            caption_status=self.caption_status,
        )

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
            arrival = (path, path.stat().st_ino)
        except OSError:
            return  # gone already
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
                source = self.config.inbox_dir / known.inbox_path
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
            try:
                job = self._register(arrival)
            except Exception:
                log.exception("could not register %s", self._relative(arrival[0]))
                job = None
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
            digest: FileDigest = hash_file(path)
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("cannot read %s: %s", relative, error.strerror)
            return None
        hash_ms = (time.perf_counter() - started) * 1000
        known = self.writer.call(records.find_by_sha, digest.sha256)
        if known is None:
            filename = display_name(relative, keep_folders=True)
            image_id = self.writer.call(
                records.insert_pending,
                sha256=digest.sha256,
                filename=filename,
                inbox_path=relative,
                size_bytes=digest.size_bytes,
                hash_ms=hash_ms,
            )
            self._activate(image_id)
            return Job(image_id, digest.sha256, digest.size_bytes, hash_ms, filename, path, arrival, digest.identity)
        if known.status in ("pending", "processing"):
            if not self._activate(known.id):
                if known.inbox_path != relative:
                    self._discard_duplicate(path, relative, known)
                return None
            # A row from before a restart whose file this is: carry on with it.
            self.writer.call(records.update_image, known.id, {"inbox_path": relative})
            return Job(known.id, known.sha256, known.size_bytes, hash_ms, known.filename, path, arrival, digest.identity)
        stored = self.config.data_dir / known.stored_path if known.stored_path else None
        if stored is not None and not stored.exists():
            # The row was committed but the daemon stopped before moving the file: finish that.
            move_file(path, stored)
            log.info("image %d %s: original moved to the store after an interrupted run", known.id, known.filename)
            return None
        self._discard_duplicate(path, relative, known)
        return None

    def _discard_duplicate(self, path: Path, relative: str, known: records.KnownImage) -> None:
        path.unlink(missing_ok=True)
        log.info(
            "duplicate: %s has the same bytes as image %d (%s, %s); removed from the inbox",
            relative,
            known.id,
            known.filename,
            known.status,
        )

    # -- processing ---------------------------------------------------------------------------

    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            taken_over = False
            try:
                taken_over = self._process(job)
            except Exception:
                self._record_internal_error(job, time.perf_counter())
            finally:
                if not taken_over:
                    self._release_job(job)

    def _release_job(self, job: Job) -> None:
        self._release(job.arrival, job.image_id)
        if job.arrival is not None and job.source.exists():
            # Still in the inbox: rewritten while processed, or not movable. Its events were
            # ignored while this job held it, so look at it again.
            self.offer(job.source)

    def _record_internal_error(self, job: Job, started: float) -> None:
        """A bug, not a bad file (those are PipelineErrors): record it and keep going."""
        log.exception("image %d %s: unexpected error", job.image_id, job.filename)
        self._fail_safely(job, PipelineError("internal error while processing this image"), started)

    def _process(self, job: Job) -> bool:
        """Run the stages; True if the caption path has taken the image over (it finishes or
        hands back the image, and releases it)."""
        if not self.writer.call(records.claim, job.image_id):
            return False
        started = time.perf_counter()
        try:
            prepared = prepare(
                job.source,
                sha256=job.sha256,
                size_bytes=job.size_bytes,
                config=self.config,
                caption_size=self.captioner.input_size,
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
        except Exception:
            self._record_internal_error(task.job, task.started)
        finally:
            self._release_job(task.job)

    def _caption_handed_back(self, task: CaptionTask) -> None:
        """Stopping before its caption: back to `pending`, processed again at the next start."""
        try:
            self.writer.call(records.update_image, task.job.image_id, {"status": "pending"})
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

    def _finish(self, job: Job, image_format: str, started: float, values: dict) -> None:
        """Commit a done image with `values`, then move its original into the content-addressed store."""
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
            _error_note(job.source).unlink(missing_ok=True)
        log.info("image %d %s: done in %.0f ms", job.image_id, job.filename, processing_ms)

    def _fail(self, job: Job, error: PipelineError, started: float) -> None:
        """Commit a failed image, then move its file to failed/ beside a note of the reason."""
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
                destination = free_name(self.config.failed_dir, display_name(job.filename), job.sha256[:12])
            if destination is not None:
                values["stored_path"] = destination.relative_to(self.config.data_dir).as_posix()
            self.writer.call(records.update_image, job.image_id, values)
            if destination is not None:
                note = _error_note(destination)
                note.parent.mkdir(parents=True, exist_ok=True)
                note.write_text(f"image {job.image_id} ({job.filename}, sha256 {job.sha256}): {error.message}\n")
                self._store(job.source, destination)
        log.warning("image %d %s: failed in %.0f ms: %s", job.image_id, job.filename, processing_ms, error.message)

    def _fail_safely(self, job: Job, error: PipelineError, started: float) -> None:
        try:
            self._fail(job, error, started)
        except Exception:
            log.exception("image %d %s: could not record the failure", job.image_id, job.filename)

    @staticmethod
    def _store(source: Path, destination: Path) -> None:
        if source == destination:
            return
        if destination.exists():
            source.unlink(missing_ok=True)  # the same bytes are already stored
        else:
            move_file(source, destination)
