"""A claim from the queue, from taken to let go: where its bytes are (the inbox or the store),
whether they are still the bytes hashed, and how it goes back to the queue when it cannot be
finished here. The pipeline worker and the caption role both take their claims through it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from daemon.database import records, work_queue
from daemon.database.work_queue import CAPTION, Claim
from daemon.errors import EnvironmentFault, MissingFile, OriginalGone, storage_fault
from daemon.inbox.files import Identity, file_identity
from daemon.roles.in_flight import Arrival
from daemon.roles.shared import Shared
from models.names import real_name, stored_name
from models.store import fetch, fetched_path, folder_of, remove_thumbnails

log = logging.getLogger("htx.daemon")


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
    key: str | None  # the source's key in the store; None when it is in the inbox
    identity: Identity  # of the source when hashed: the bytes processed must be those


@dataclass(frozen=True)
class CaptionTask:
    """A job waiting for its caption: metadata and thumbnails are already committed."""

    job: Job
    image_format: str | None  # None: its original is in the store already
    started: float  # perf_counter at claim, for processing_ms


@contextmanager
def storing(key: str) -> Iterator[None]:
    """Writing into the store: an OSError here is the machine's fault, not the image's."""
    try:
        yield
    except OSError as error:
        raise storage_fault(error, folder_of(key)) from error


class Claims:
    def __init__(self, shared: Shared, recheck: Callable[[Path], None]) -> None:
        self.shared = shared
        # Look at an inbox file again (the watch role's, while this process watches).
        self.recheck = recheck

    def take(self, stage: str, limit: int) -> list[Claim]:
        """Claims of `stage` from the queue; none after waiting for work to be announced (or
        after reporting a fault, which the caller's next wait_turn waits out)."""
        shared = self.shared
        try:
            claims = shared.writer.call_statement(
                work_queue.claim, shared.me.worker_id, stage=stage, limit=limit, lease_s=shared.config.pipeline.lease_s
            )
        except EnvironmentFault as fault:
            shared.report(fault)
            return []
        if not claims:
            shared.signal.wait()
        shared.claims.hold(claim.image.id for claim in claims)
        return claims

    def start(self, claim: Claim) -> Job | None:
        """The job of a claim, counted as work in hand until `release_job`; or None, the claim
        ended: nothing to process, or given back because a fault of the environment stopped
        even finding out."""
        shared = self.shared
        shared.in_flight.begin()
        try:
            job = self._job_for(claim)
        except EnvironmentFault as fault:
            shared.report(fault)
            self.release_claim(claim.image.id, {})
            job = None
        if job is None:
            shared.claims.let_go(claim.image.id)
            shared.in_flight.end()
        return job

    def _job_for(self, claim: Claim) -> Job | None:
        """Where a claimed image's bytes are, and whether they are still the bytes hashed; None
        when there is nothing to process (recorded as missing, or dropped as rewritten)."""
        known = claim.image
        earlier_ms = claim.processing_ms if claim.stage == CAPTION and claim.processing_ms else known.hash_ms or 0.0
        key = None
        if known.inbox_path is not None:
            source = self.shared.config.inbox_dir / real_name(known.inbox_path)
        elif known.stored_path is not None:
            key = known.stored_path
            source = self.shared.store.local_path(key) or self._fetch(known, key)
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
        job = Job(known.id, known.sha256, known.size_bytes, earlier_ms, known.filename, source, arrival, key, identity)
        if arrival is not None and claim.source_identity not in (None, identity_text(identity)):
            # Rewritten since it was hashed: these are not the bytes of this row. The watcher
            # registers the new bytes (the change was an event, and a rescan sees it too).
            self.drop_rewritten(job)
            return None
        return job

    def _fetch(self, known: records.KnownImage, key: str) -> Path | None:
        """The object under `key` fetched from the store to a file of this machine, for as long
        as the job lasts; None if it is not there, or not the bytes hashed."""
        destination = fetched_path(self.shared.config.work_dir, known.id)
        with storing(key):
            try:
                sha256 = fetch(self.shared.store, key, destination)
            except FileNotFoundError:
                return None
        if sha256 != known.sha256:
            destination.unlink(missing_ok=True)
            log.error("image %d %s: the store holds other bytes under %s than were registered", known.id, known.filename, key)
            return None
        return destination

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
                remove_thumbnails(self.shared.store, known.sha256)

    def _finish_missing(self, known: records.KnownImage, values: dict) -> bool:
        shared = self.shared
        if not shared.writer.call_statement(work_queue.finish, shared.me.worker_id, known.id, values | shared.me.by_me()):
            return False
        log.warning("image %d %s: failed: %s", known.id, known.filename, values.get("error") or OriginalGone().message)
        return True

    def drop_rewritten(self, job: Job) -> None:
        if not self.shared.writer.call_statement(work_queue.drop, self.shared.me.worker_id, job.image_id):
            return
        remove_thumbnails(self.shared.store, job.sha256)
        log.info("image %d %s: rewritten since it was hashed; the new content is taken instead", job.image_id, job.filename)
        self.recheck(job.source)

    def give_back(self, job: Job) -> None:
        """A fault of the environment, or a stop, interrupted this image: back to pending, with
        where its bytes are now, to be claimed again (by any worker) once the fault is gone."""
        if job.arrival is not None:
            values = {"inbox_path": stored_name(self.shared.relative(job.source)), "stored_path": None}
        else:
            values = {"inbox_path": None, "stored_path": job.key}
        self.release_claim(job.image_id, values)

    def release_claim(self, image_id: int, values: dict) -> None:
        """Back to pending, untouched but for `values`; when the fault that interrupted it
        stops this too, owed, and given back once the fault is gone (the lease role)."""
        shared = self.shared
        try:
            shared.writer.call_statement(work_queue.release, shared.me.worker_id, [image_id], values)
        except EnvironmentFault as fault:
            shared.report(fault)
            shared.claims.owe(image_id, values)
            return
        shared.signal.wake()

    def release_job(self, job: Job) -> None:
        shared = self.shared
        shared.claims.let_go(job.image_id)
        shared.in_flight.end(job.arrival)
        if job.key is not None and shared.store.remote:
            job.source.unlink(missing_ok=True)  # fetched for this job
        if job.arrival is not None and os.path.lexists(job.source):
            # Still in the inbox: rewritten while processed. Its events were ignored while this
            # job held it, so look at it again once its writer is done.
            self.recheck(job.source)
