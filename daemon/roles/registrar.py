"""Registration: each complete inbox file offered by the watcher is hashed and gets its pending
row (unique on the digest, so two registrations of the same bytes never make two records), then
the workers are woken. A file whose bytes already have a record is a duplicate (removed), the
original of a record that a crash left behind (moved on to the store), or its file renamed.

Only regular files are read, never through a symlink: anything else in the inbox is named once
in the log and left alone."""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from daemon.database import records, watch_lease, work_queue
from daemon.errors import EnvironmentFault, NotRegularFile
from daemon.inbox.files import FileDigest, file_identity, hash_file
from daemon.roles.claims import identity_text, storing
from daemon.roles.in_flight import Arrival
from daemon.roles.outcomes import Outcomes
from daemon.roles.shared import Shared
from models.files import file_kind
from models.names import display_name, real_name, stored_name
from models.store import incoming_key

log = logging.getLogger("htx.daemon")

# Files skipped (not regular, unreadable) are named once each; past this many remembered, the
# memory is cleared and a file may be named once more.
MAX_SKIPPED_REMEMBERED = 10_000


class Registrar:
    def __init__(self, shared: Shared, outcomes: Outcomes, watching: Callable[[], bool]) -> None:
        self.shared = shared
        self.outcomes = outcomes
        self._watching = watching  # whether this process holds the watch: else the file is not its
        self._registrations: queue.Queue[Arrival] = queue.Queue()
        self._skipped_lock = threading.Lock()
        self._skipped: set[tuple[Path, int, int, str]] = set()

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
        if self.shared.in_flight.arrive(arrival):
            self._registrations.put(arrival)

    def _skip(self, path: Path, reason: str) -> None:
        """Leave a file in the inbox unread, and say so once (not at every rescan)."""
        try:
            status = os.lstat(path)
        except OSError:
            return
        key = (path, status.st_ino, status.st_mtime_ns, reason)
        with self._skipped_lock:
            if key in self._skipped:
                return
            if len(self._skipped) >= MAX_SKIPPED_REMEMBERED:
                self._skipped.clear()
            self._skipped.add(key)
        log.warning("%s: %s: left in the inbox, not read", self._shown(path), reason)

    def _shown(self, path: Path) -> str:
        return display_name(self.shared.relative(path), keep_folders=True)

    def loop(self) -> None:
        shared = self.shared
        while not shared.stopping.is_set():
            try:
                arrival = self._registrations.get(timeout=0.2)
            except queue.Empty:
                continue
            while shared.wait_turn():
                try:
                    self.register(arrival)
                except EnvironmentFault as fault:
                    shared.report(fault)
                    continue
                except Exception:
                    log.exception("could not register %s", self._shown(arrival[0]))
                break
            # Forgotten once in the queue: a rescan that offers it again while it waits finds
            # its row, and a new file that reuses the path and inode later is a new arrival.
            shared.in_flight.end(arrival)

    def register(self, arrival: Arrival) -> int | None:
        """Hash a complete inbox file and find or create its row; the image id if there is
        work for it in the queue."""
        shared = self.shared
        path = arrival[0]
        if not self._watching():
            return None  # the watch was lost: the file is the new holder's
        relative = shared.relative(path)
        started = time.perf_counter()
        try:
            digest: FileDigest = hash_file(path, shared.config.pipeline.max_file_bytes)
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
        known = shared.writer.call(records.find_by_sha, digest.sha256)
        if known is None:
            where = {"inbox_path": inbox_path}
            if shared.store.remote:
                # Into the bucket first, so that a worker on any machine can fetch it.
                if not self._upload(path, digest):
                    return None
                where = {"inbox_path": None, "stored_path": incoming_key(digest.sha256)}
            try:
                image_id = shared.writer.call(
                    # Only while this process holds the watch lease (checked in the insert's
                    # transaction): a holder that froze and lost it registers nothing after.
                    watch_lease.insert_if_watching,
                    shared.me.worker_id,
                    sha256=digest.sha256,
                    filename=display_name(relative, keep_folders=True),
                    size_bytes=digest.size_bytes,
                    hash_ms=hash_ms,
                    source_identity=identity,
                    **where,
                )
            except watch_lease.LostWatch:
                log.debug("%s not registered: another process took the watch, and the file with it", relative)
                return None
            if image_id is not None:
                shared.writer.call(work_queue.announce)
                shared.signal.wake()
                if shared.store.remote:
                    self._remove_if_unchanged(path, digest)
                return image_id
            known = shared.writer.call(records.find_by_sha, digest.sha256)  # registered meanwhile
            if known is None:
                return None
        if known.inbox_path is None and known.stored_path and not self._stored(known.stored_path):
            # The row was committed but its worker stopped before moving the file: finish that.
            with storing(known.stored_path):
                shared.store.put_file(known.stored_path, path)
            log.info("image %d %s: original moved to the store after an interrupted run", known.id, known.filename)
            return None
        if known.status in ("pending", "processing"):
            if known.inbox_path == inbox_path:
                return None  # this very file, already in the queue
            previous = shared.config.inbox_dir / real_name(known.inbox_path) if known.inbox_path else None
            if known.status == "pending" and previous is not None and not os.path.lexists(previous):
                # Its file was renamed (or a restart finds it under another name): carry on with it.
                shared.writer.call(records.update_image, known.id, {"inbox_path": inbox_path, "source_identity": identity})
                return known.id
        self._discard_duplicate(path, relative, known, digest)
        return None

    def _stored(self, key: str) -> bool:
        with storing(key):  # a store that fails here is the environment's fault: retried
            return self.shared.store.exists(key)

    def _upload(self, path: Path, digest: FileDigest) -> bool:
        """The inbox file's bytes put in the store under their digest; False (and nothing put)
        if it changed since it was hashed: its new bytes are offered again."""
        key = incoming_key(digest.sha256)
        with storing(key):
            self.shared.store.upload(key, path)
        try:
            if file_identity(path) == digest.identity:
                return True
        except OSError:
            pass
        with storing(key):  # what went up may be part old, part new bytes: never under this key
            self.shared.store.remove(key)
        log.info("%s changed while it was put in the store; its new content is taken instead", self._shown(path))
        return False

    def _remove_if_unchanged(self, path: Path, digest: FileDigest) -> None:
        """The inbox file, registered with its bytes in the store, is not needed here any more."""
        try:
            if file_identity(path) == digest.identity:
                path.unlink()
        except FileNotFoundError:
            pass

    def _discard_duplicate(self, path: Path, relative: str, known: records.KnownImage, digest: FileDigest) -> None:
        shown = display_name(relative, keep_folders=True)
        max_file_bytes = self.shared.config.pipeline.max_file_bytes
        if digest.over_limit:
            # Only the first max_file_bytes + 1 bytes were compared: the rest may differ, so
            # the file is kept (in failed/, as too large) rather than removed.
            reason = f"too large, and the same size and first {max_file_bytes:,} bytes as image {known.id} ({known.filename})"
            self.outcomes.move_to_failed(path, shown, digest.sha256, reason)
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
