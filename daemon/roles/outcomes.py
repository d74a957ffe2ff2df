"""How a claimed image ends: done or failed, committed while the claim is held, then its file
put in its place in the store (the original under its content's key, a failed file in failed/
beside a note of why). A row is always committed before its file moves, so a crash leaves a
file to move again, never a record without its file. In an object store the file is already
in the bucket (incoming/, put there at registration): it is copied to its key before the
commit and its incoming copy removed after, so a crash leaves at most an object no row names
(`htx storage gc` finds those)."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path

from daemon.database import records, work_queue
from daemon.errors import EnvironmentFault, MissingFile, PipelineError, SourceChanged
from daemon.inbox.files import file_identity
from daemon.roles.claims import Claims, Job, storing
from daemon.roles.shared import Shared
from daemon.stages.decode import EXTENSIONS
from models.names import display_name
from models.store import FAILED, free_failed_key, is_failed_copy, note_key, original_key, write_note

log = logging.getLogger("htx.daemon")

DONE = {"status": "done", "stage": None, "error": None, "error_kind": None}


def last_part(filename: str) -> str:
    """The name in a display name with folders ("2024/trip/a.jpg" -> "a.jpg")."""
    return filename.rsplit("/", 1)[-1]


class Outcomes:
    def __init__(self, shared: Shared, claims: Claims) -> None:
        self.shared = shared
        self.claims = claims
        # Names in failed/ are picked and used under this lock, so two failures never share one.
        self._failed_names = threading.Lock()

    def finish(self, job: Job, image_format: str | None, started: float, values: dict) -> None:
        """Commit a done image with `values`, then move its original into the store."""
        processing_ms = self.record_and_store(job, image_format, started, values | DONE | {"processed_at": records.utcnow()})
        if processing_ms is None:
            return
        if job.key is not None and is_failed_copy(job.key):  # reprocessed: the old reason is stale
            with storing(job.key):
                self.shared.store.remove(note_key(job.key))
        log.info("image %d %s: done in %.0f ms", job.image_id, job.filename, processing_ms)

    def record_and_store(self, job: Job, image_format: str | None, started: float, outcome: dict) -> float | None:
        """Commit `outcome` with the time spent and the original's key in the store, then move
        the original there; the time, or None when nothing was recorded (the inbox file no
        longer holds the bytes processed, or the claim was lost)."""
        if not self._still_the_hashed_bytes(job, started):
            return None
        key = job.key if image_format is None else original_key(job.sha256, EXTENSIONS[image_format])
        processing_ms = self.elapsed_ms(job, started)
        self._place(job, key)
        if not self._record(job, outcome | {"stored_path": key, "inbox_path": None, "processing_ms": processing_ms}):
            return None
        self._put(job, key)
        return processing_ms

    def fail(self, job: Job, error: PipelineError, started: float) -> None:
        """Commit a failed image, then move its file to failed/ beside a note of the reason."""
        if self._superseded(job):
            return
        processing_ms = self.elapsed_ms(job, started)
        if not isinstance(error, MissingFile) and self._source_changed(job):
            error = SourceChanged()
        values = records.failure_values(error) | {"processing_ms": processing_ms, "stage": None}
        with self._failed_names:
            if isinstance(error, MissingFile):
                key = None
            elif job.key is not None and is_failed_copy(job.key):
                key = job.key  # reprocessed from failed/ and failed again
            else:
                with storing(FAILED):
                    key = free_failed_key(self.shared.store, last_part(job.filename), job.sha256)
            if key is not None:
                values["stored_path"] = key
                self._place(job, key)
            if not self._record(job, values):
                return
            if key is not None:
                self._note(key, f"image {job.image_id} ({job.filename}, sha256 {job.sha256}): {error.message}\n")
                self._put(job, key)
        log.warning("image %d %s: failed in %.0f ms: %s", job.image_id, job.filename, processing_ms, error.message)

    def fail_safely(self, job: Job, error: PipelineError, started: float) -> None:
        try:
            self.fail(job, error, started)
        except EnvironmentFault as fault:
            self.shared.report(fault)
            self.claims.give_back(job)  # failed again once the fault is gone
        except Exception:
            log.exception("image %d %s: could not record the failure", job.image_id, job.filename)

    def record_internal_error(self, job: Job, started: float) -> None:
        """A bug, not a bad file (those are PipelineErrors): record it and keep going."""
        log.exception("image %d %s: unexpected error", job.image_id, job.filename)
        self.fail_safely(job, PipelineError("internal error while processing this image"), started)

    def move_to_failed(self, source: Path, name: str, sha256: str, reason: str) -> None:
        """Keep an inbox file that has no record of its own in failed/, with a note of why."""
        with self._failed_names:
            with storing(FAILED):
                key = free_failed_key(self.shared.store, last_part(name), sha256)
            self._note(key, f"{name}: {reason}\n")
            with storing(key):
                self.shared.store.put_file(key, source)

    def elapsed_ms(self, job: Job, started: float) -> float:
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
        self.claims.drop_rewritten(job)
        return True

    def _still_the_hashed_bytes(self, job: Job, started: float) -> bool:
        """Whether the inbox file still holds the bytes processed; if not, the image is dropped
        (rewritten: its new bytes are registered) or failed (gone or replaced), and False."""
        if self._superseded(job):
            return False
        if self._source_changed(job):
            self.fail(job, SourceChanged(), started)
            return False
        return True

    def _record(self, job: Job, values: dict) -> bool:
        """Write an outcome while this process holds the claim; False (and nothing written)
        if it lost it: its lease ran out (a stall, a lost connection) and another worker took
        the image, which records it instead."""
        shared = self.shared
        if shared.writer.call_statement(work_queue.finish, shared.me.worker_id, job.image_id, values | shared.me.by_me()):
            return True
        log.warning("image %d %s: another worker took it over (this one's claim ran out); nothing recorded here", job.image_id, job.filename)
        return False

    def _note(self, failed_key: str, text: str) -> None:
        with storing(failed_key):
            write_note(self.shared.store, failed_key, text)

    def _place(self, job: Job, key: str) -> None:
        """Before the commit: in a remote store, the object copied to `key` within the store
        (a repeated copy changes nothing), so the committed row never names a key not there."""
        if self.shared.store.remote and job.key not in (None, key):
            with storing(key):
                self.shared.store.copy(job.key, key)  # type: ignore[arg-type]

    def _put(self, job: Job, key: str) -> None:
        """After the commit: the file in its place, under `key`."""
        store = self.shared.store
        if store.remote and job.key is not None:
            if job.key != key:  # copied before the commit: the old key goes now
                with storing(job.key):
                    store.remove(job.key)
            return
        source = job.source
        try:
            with storing(key):
                self.shared.store.put_file(key, source)
        except EnvironmentFault:
            if os.path.lexists(source):
                raise
            # Its row is committed: what is lost is the copy someone deleted from the inbox.
            log.warning("%s left the inbox before it could be stored", display_name(source.name))
