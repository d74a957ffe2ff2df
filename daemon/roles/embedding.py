"""Embedding, in every process with the captions role (when search.model is not "none"): one
thread that embeds the captions of done images that have none by the search model yet, newest
first, a batch (search.batch_size) per model call. It loads the model when it first finds a
caption to embed: a process that never sees one never holds it (about 300 MB with torch).

Nothing marks an image for it: a new caption, a recaption (the trigger of migration 0013 removes
the old embedding), a change of search.model (no row by the new model) all leave a done image
with a caption and no embedding, which is what it looks for. Processes share the work by id
(each takes the ids that are its place among the live embedders, modulo their number), so a
fleet embeds each caption once; a batch done twice while they change is written twice, no more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from daemon.database import embeddings, records
from daemon.database.writer import DatabaseWriter
from daemon.errors import EnvironmentFault
from daemon.roles.shared import Shared, spawn
from models import embedding_reads
from models.text_embedder import SearchModelUnavailable, TextEmbedder, to_bytes

log = logging.getLogger("htx.search")

# How often an idle embedder looks for captions recorded since its last look (an index range
# of processed_at), and how far back each look reaches, for clocks of a fleet a little apart.
IDLE_POLL_S = 1.0
RECENT_MARGIN_S = 10.0
# How often it walks every captioned image instead: what a look at the recent ones cannot see
# (`htx recaption`, which sets no processed_at; a clock further off).
FULL_WALK_S = 60.0
# How long an embedder waits after a batch failed for a reason of its own (out of memory, a bug).
FAILED_BATCH_WAIT_S = 30.0
# How often progress is logged while there is a backlog (a reindex).
PROGRESS_LOG_S = 10.0


def embed_waiting(
    writer: DatabaseWriter,
    embedder: TextEmbedder,
    *,
    limit: int,
    part: tuple[int, int] = (0, 1),
    load: Callable[[], None] | None = None,
    processed_since: datetime | None = None,
) -> int:
    """Embed up to `limit` captions waiting (of `part` and `processed_since`, as
    embedding_reads.waiting) and record them; how many. The model is loaded (by `load`, if
    given) only when one waits."""
    batch = writer.call(embedding_reads.waiting, embedder.key, limit=limit, part=part, processed_since=processed_since)
    if not batch:
        return 0
    if not embedder.loaded:
        (load or embedder.load)()
    vectors = embedder.embed([caption for _, caption in batch])
    rows = [(image_id, caption, to_bytes(vector)) for (image_id, caption), vector in zip(batch, vectors, strict=True)]
    writer.call(embeddings.store, embedder.key, rows)
    return len(rows)


class Embedding:
    def __init__(self, shared: Shared, embedder: TextEmbedder) -> None:
        self.shared = shared
        self.embedder = embedder
        self.batch_size = shared.config.search.batch_size
        self.status = "idle"  # then "loading", "ready" or "unavailable: <reason>"
        self.embedded = 0  # by this process since it started

    def start(self, threads: list[threading.Thread]) -> None:
        spawn(threads, "htx-embedder", self._loop)

    def _loop(self) -> None:
        backlog_started: float | None = None
        last_log = 0.0
        walked_at = -FULL_WALK_S  # monotonic: the first look walks them all (a new search.model)
        since: datetime | None = None
        while self.shared.wait_turn():
            looked_at = records.utcnow()
            walk = time.monotonic() - walked_at >= FULL_WALK_S
            try:
                done = self.embed_once(None if walk else since)
                if walk and not done:
                    walked_at = time.monotonic()
                if not done:
                    since = looked_at - timedelta(seconds=RECENT_MARGIN_S)
            except EnvironmentFault as fault:
                self.shared.report(fault)
                continue
            except SearchModelUnavailable:
                return  # said once, by _load
            except Exception:  # a bug, or the model failing on a batch: never the thread's end
                log.exception("search: could not embed a batch of captions; trying again in %.0f s", FAILED_BATCH_WAIT_S)
                self.shared.stopping.wait(FAILED_BATCH_WAIT_S)
                continue
            if done:
                now = time.monotonic()
                backlog_started = backlog_started or now
                if now - last_log >= PROGRESS_LOG_S:
                    last_log = now
                    self._log_progress()
                continue
            if backlog_started is not None and time.monotonic() - backlog_started >= PROGRESS_LOG_S:
                self._log_progress()
            backlog_started = None
            self.shared.stopping.wait(IDLE_POLL_S)

    def _load(self) -> None:
        """Load the model; SearchModelUnavailable (said in the log, once) if it cannot be."""
        started = time.perf_counter()
        self.status = "loading"
        try:
            self.embedder.load()
        except SearchModelUnavailable as error:
            self.status = f"unavailable: {error.reason}"
            log.error("%s. Until then no caption is embedded: search by meaning does not find them", error)
            raise
        except Exception as error:  # a broken install: still never the daemon's end
            reason = f"search model {self.embedder.key} could not be loaded ({type(error).__name__})"
            self.status = f"unavailable: {reason}"
            log.exception("search model %s could not be loaded", self.embedder.key)
            raise SearchModelUnavailable(reason, reason) from error
        self.status = "ready"
        log.info("search model %s ready in %.1f s", self.embedder.key, time.perf_counter() - started)

    def embed_once(self, processed_since: datetime | None = None) -> int:
        """Embed one batch of the captions waiting (this process's part of them, of images
        recorded since `processed_since` if given); how many."""
        done = embed_waiting(
            self.shared.writer, self.embedder, limit=self.batch_size, part=self._part(), load=self._load, processed_since=processed_since
        )
        self.embedded += done
        return done

    def idle(self) -> bool:
        """Whether nothing of this process's part waits to be embedded (or nothing can be)."""
        if self.status.startswith("unavailable"):
            return True
        return not self.shared.writer.call(embedding_reads.waiting, self.embedder.key, limit=1, part=self._part())

    def _part(self) -> tuple[int, int]:
        """(this process's place, the number of live embedders); (0, 1) when it is alone."""
        me = self.shared.me.worker_id
        live = self.shared.writer.call(embeddings.embedders)
        if me not in live:
            return (0, 1)  # its own heartbeat is not in yet
        return (live.index(me), len(live))

    def _log_progress(self) -> None:
        try:
            counts = self.shared.writer.call(embedding_reads.counts, self.embedder.key)
        except EnvironmentFault:
            return
        total = counts.embedded + counts.waiting
        log.info(
            "search: %d of %d captions embedded with %s (%d to go)", counts.embedded, total, self.embedder.key, counts.waiting
        )
