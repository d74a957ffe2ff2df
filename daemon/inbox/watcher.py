"""Notice complete files in the inbox.

The watchdog handler only records what happened; a `StabilityTracker` decides when a file is
complete and hands it to the daemon:

- closed after writing (inotify) or renamed into the inbox: complete at once;
- created or changed with no close event to wait for (polling, a folder copied in before its
  watch existed): complete once size and mtime have been still for `watch.settle_ms`;
- found by the start-up scan or the periodic rescan: complete if untouched for `settle_ms`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.errors import NotRegularFile
from models.files import open_regular
from models.config import WatchConfig
from models.ignore import IgnoreRules

log = logging.getLogger(__name__)

# Filesystems where inotify sees only local changes, so a file written by another machine
# would never produce an event.
NETWORK_FILESYSTEMS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "fuse.glusterfs",
    "fuse.sshfs", "sshfs", "davfs", "fuse.davfs2", "fuse.rclone", "fuse.s3fs", "lustre", "gpfs",
}


def iter_inbox_files(inbox: Path, rules: IgnoreRules, *, recursive: bool) -> Iterator[Path]:
    """Every entry of the inbox that is not a folder and not ignored, skipping ignored folders
    entirely. Symlinks, FIFOs and devices are found too, so the daemon can say it skips them; a
    symlink to a folder is never followed."""
    for folder, subfolders, names in os.walk(inbox):
        links = [name for name in subfolders if os.path.islink(os.path.join(folder, name))]
        subfolders[:] = sorted(
            name for name in subfolders if recursive and name not in links and not rules.ignored_name(name)
        )
        for name in sorted(names + links):
            if not rules.ignored_name(name):
                yield Path(folder, name)


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem `path` is on, from /proc/mounts (Linux)."""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            entries = [line.split()[1:3] for line in mounts if len(line.split()) >= 3]
    except OSError:
        return None
    resolved = str(path.resolve())
    best, best_type = "", None
    for mount_point, fs_type in entries:
        mount_point = mount_point.replace("\\040", " ")
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fs_type
    return best_type


def choose_mode(inbox: Path, configured: str) -> str:
    """"inotify" or "polling"; auto picks polling for a network share, where inotify is blind."""
    if configured != "auto":
        return configured
    fs_type = filesystem_type(inbox)
    if fs_type in NETWORK_FILESYSTEMS:
        log.info("the inbox is on a %s network filesystem: watching it by polling", fs_type)
        return "polling"
    return "inotify"


_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
_PNG_START = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_TAIL_BYTES = 64


def looks_whole(path: Path) -> bool:
    """False for a JPEG or PNG whose last bytes are not its format's end marker: a writer that
    closes it between appends is not done. Anything else counts as whole; whether it is a good
    image is for the pipeline to say. Reads 8 bytes at the start and 64 at the end."""
    try:
        with open_regular(path) as handle:
            head = handle.read(len(_PNG_START))
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read(_TAIL_BYTES).rstrip(b"\x00")  # some writers pad after the end
    except (OSError, NotRegularFile):
        return True
    if head.startswith(_JPEG_START):
        return _JPEG_END in tail
    if head.startswith(_PNG_START):
        return tail.endswith(_PNG_END)
    return True


@dataclass
class _Candidate:
    size: int
    mtime_ns: int
    changed_at: float  # monotonic time of the last event or observed change
    writing: bool  # someone has it open or wrote to it: with inotify, wait for the close
    # Closed at least once already: an open alone is a reader now (the daemon's own look at
    # the file's end among them), not a writer to wait for.
    closed: bool = False


class StabilityTracker:
    """Decides when a file is complete; calls `on_complete(path)` once it is."""

    def __init__(
        self,
        *,
        settle_s: float,
        waits_for_close: bool,
        on_complete: Callable[[Path], None],
    ) -> None:
        self._settle_s = settle_s
        self._waits_for_close = waits_for_close
        # A writer that went silent without closing (it hung, or a close event was lost)
        # still gets its file taken eventually.
        self._stale_s = max(30.0, 10 * settle_s)
        self._on_complete = on_complete
        self._candidates: dict[Path, _Candidate] = {}
        # When each path was last taken on a close or a move: one that changes again within the
        # settle time has a writer that opens, appends and closes it in turns, and is taken
        # only once it has been still for the settle time.
        self._taken_at: dict[Path, float] = {}
        # Files taken off `_candidates` and not yet handed over: still counted by tracked(),
        # or the daemon's wait_idle could see nothing settling and nothing outstanding while
        # they are between the two, and return early (`htx daemon --once` would exit).
        self._handing_over = 0
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="htx-stability", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def tracked(self) -> int:
        """Files seen and not yet handed over."""
        with self._lock:
            return len(self._candidates) + self._handing_over

    def complete(self, path: Path) -> None:
        """Closed after writing, or moved in: complete at once, unless it was taken so recently
        that its writer is evidently not done with it."""
        now = time.monotonic()
        with self._lock:
            taken_at = self._taken_at.get(path)
            if taken_at is not None and now - taken_at < self._settle_s:
                self._taken_at[path] = now
                resettle = True
            else:
                self._candidates.pop(path, None)
                self._taken_at[path] = now
                resettle = False
        if resettle:
            self._track(path, writing=False, resettle=True)
        else:
            self._on_complete(path)

    def closed(self, path: Path) -> None:
        """Closed after writing: complete, unless it is an image that does not end yet (its
        writer appends and closes in turns), which is taken once still for the settle time."""
        if looks_whole(path):
            self.complete(path)
        else:
            self._track(path, writing=False, resettle=True)

    def recheck(self, path: Path) -> None:
        """Look at a file again once it has been still for the settle time (the daemon gave it
        back: it was rewritten while processed)."""
        self._track(path, writing=False, resettle=True)

    def forget(self, path: Path) -> None:
        with self._lock:
            self._candidates.pop(path, None)

    def created(self, path: Path) -> None:
        self._track(path, writing=False)

    def opened(self, path: Path) -> None:
        """Only matters for a file just created: its creator still has it open."""
        with self._lock:
            candidate = self._candidates.get(path)
            if candidate is not None and not candidate.closed:
                candidate.writing = True
                candidate.changed_at = time.monotonic()

    def modified(self, path: Path) -> None:
        self._track(path, writing=True)

    def seen(self, path: Path) -> None:
        """A file found by a scan: complete if nothing has touched it for the settle time."""
        with self._lock:
            if path in self._candidates:
                return
        try:
            stat = os.lstat(path)
        except OSError:
            return
        if time.time() - stat.st_mtime >= self._settle_s:
            self._on_complete(path)
        else:
            self._track(path, writing=False)

    def _track(self, path: Path, *, writing: bool, resettle: bool = False) -> None:
        """Watch `path` until it is complete; `resettle`: by stillness alone, not by a close."""
        try:
            stat = os.lstat(path)
        except OSError:
            return
        with self._lock:
            candidate = self._candidates.get(path)
            if candidate is None:
                candidate = self._candidates[path] = _Candidate(stat.st_size, stat.st_mtime_ns, time.monotonic(), writing)
            else:
                candidate.writing = writing if resettle else candidate.writing or writing
                candidate.changed_at = time.monotonic()
            candidate.closed = candidate.closed or resettle
            self._lock.notify_all()

    def _run(self) -> None:
        tick = min(0.1, max(0.01, self._settle_s / 4))
        while True:
            with self._lock:
                if self._stopping:
                    return
                self._lock.wait(tick)
                now = time.monotonic()
                due = self._due(now)
                self._handing_over = len(due)
                if len(self._taken_at) > 1000:
                    self._taken_at = {path: at for path, at in self._taken_at.items() if now - at < self._settle_s}
            for path in due:
                self._on_complete(path)
                with self._lock:
                    self._handing_over -= 1

    def _due(self, now: float) -> list[Path]:
        """Candidates now complete (called with the lock held)."""
        due = []
        for path, candidate in list(self._candidates.items()):
            quiet_for = now - candidate.changed_at
            needed = self._stale_s if (candidate.writing and self._waits_for_close) else self._settle_s
            if quiet_for < needed:
                continue
            try:
                stat = os.lstat(path)
            except OSError:
                del self._candidates[path]
                continue
            if (stat.st_size, stat.st_mtime_ns) == (candidate.size, candidate.mtime_ns):
                del self._candidates[path]
                due.append(path)
            else:
                candidate.size, candidate.mtime_ns, candidate.changed_at = stat.st_size, stat.st_mtime_ns, now
        return due


class _InboxEventHandler(FileSystemEventHandler):
    """Runs on watchdog's dispatcher thread, so it only records events: no I/O beyond a stat."""

    def __init__(self, inbox: Path, rules: IgnoreRules, tracker: StabilityTracker, recursive: bool) -> None:
        self._inbox = inbox
        self._rules = rules
        self._tracker = tracker
        self._recursive = recursive

    def _relevant(self, raw: str | bytes) -> Path | None:
        if not raw:
            return None
        path = Path(os.fsdecode(raw))
        try:
            relative = path.relative_to(self._inbox)
        except ValueError:
            return None  # moved out of the inbox
        if not relative.parts or self._rules.ignored(relative):
            return None
        if not self._recursive and len(relative.parts) > 1:
            return None
        return path

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            source = self._relevant(event.src_path)
            if source is not None:
                self._tracker.forget(source)
            destination = self._relevant(event.dest_path)
            if destination is not None:
                self._tracker.complete(destination)
            return
        path = self._relevant(event.src_path)
        if path is None:
            return
        if isinstance(event, FileClosedEvent):
            self._tracker.closed(path)
        elif isinstance(event, FileCreatedEvent):
            self._tracker.created(path)
        elif isinstance(event, FileOpenedEvent):
            self._tracker.opened(path)
        elif isinstance(event, FileModifiedEvent):
            self._tracker.modified(path)
        elif isinstance(event, FileDeletedEvent):
            self._tracker.forget(path)


class InboxWatcher:
    """Watches the inbox (inotify or polling) and scans it; complete files go to `on_complete`.

    With `observe=False` nothing is watched: only scans find files (`htx daemon --once`).
    """

    def __init__(
        self, inbox: Path, config: WatchConfig, on_complete: Callable[[Path], None], *, observe: bool = True
    ) -> None:
        self.inbox = inbox
        self._config = config
        self._rules = IgnoreRules(config.ignore)
        self.mode = choose_mode(inbox, config.mode)
        self._observer = self._make_observer() if observe else None
        self._tracker = StabilityTracker(
            settle_s=config.settle_ms / 1000,
            waits_for_close=self.mode == "inotify" and self._observer is not None,
            on_complete=on_complete,
        )

    def _make_observer(self) -> BaseObserver:
        if self.mode == "inotify":
            try:
                from watchdog.observers.inotify import InotifyObserver

                # Full events: a file renamed in from outside arrives as a move, not a creation,
                # so it is known to be complete.
                return InotifyObserver(generate_full_events=True)
            except (ImportError, OSError) as error:
                # Out of inotify instances, or not Linux: polling still works, only slower.
                log.warning("inotify is not available (%s): watching the inbox by polling", error)
                self.mode = "polling"
        interval = min(1.0, max(0.1, self._config.settle_ms / 2000))
        return PollingObserver(timeout=interval)

    def start(self) -> None:
        self._tracker.start()
        if self._observer is not None:
            # watchdog warns when a new folder gets its watch twice (from its creation event and
            # from the walk of its parent) and keeps one: harmless, and where warnings are errors
            # the warning would kill the observer's thread and every event after it.
            warnings.filterwarnings("ignore", message="Callback with id .* already exists", category=RuntimeWarning)
            handler = _InboxEventHandler(self.inbox, self._rules, self._tracker, self._config.recursive)
            self._observer.schedule(handler, str(self.inbox), recursive=self._config.recursive)
            self._observer.start()

    def stop(self) -> None:
        if self._observer is not None and self._observer.is_alive():
            self._observer.stop()
            self._observer.join()
        self._tracker.stop()

    def scan(self) -> int:
        """Offer every file now in the inbox; returns how many were found."""
        found = 0
        for path in iter_inbox_files(self.inbox, self._rules, recursive=self._config.recursive):
            found += 1
            self._tracker.seen(path)
        return found

    def settling(self) -> int:
        """Files seen but not yet complete."""
        return self._tracker.tracked()

    def recheck(self, path: Path) -> None:
        """Offer `path` again once it has been still for the settle time."""
        self._tracker.recheck(path)
