"""Reading an image's files from the store for a response: a thumbnail whole, an original
streamed, or a redirect to a short-lived signed URL (storage.s3.presign_s); and whether the
store answers, for /healthz and uploads.

A folder store is read here in the event loop (a thumbnail is a few KiB in the page cache); an
object store only on worker threads, each request with its timeout. A store that fails is the
server's fault: 503, said in words, never the endpoint or the key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from api.errors import STORE_UNREACHABLE, ServiceUnavailable
from models.files import CHUNK_BYTES
from models.store import Store, StoredObject, StoreProblem

log = logging.getLogger("htx.api")

# How long a check of the store's health is trusted: /healthz polled every second asks it once.
HEALTH_MAX_AGE_S = 5.0


class StoreHealth:
    """What is wrong with the store, checked at most every HEALTH_MAX_AGE_S, and known at once
    when a request to it fails. A folder store's problems are the data disk's, seen elsewhere."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._problem: str | None = None
        self._checked_at = -HEALTH_MAX_AGE_S

    async def problem(self) -> str | None:
        if not self.store.remote:
            return None
        if time.monotonic() - self._checked_at < HEALTH_MAX_AGE_S:
            return self._problem
        return await run_in_threadpool(self._check)

    def _check(self) -> str | None:
        with self._lock:
            if time.monotonic() - self._checked_at >= HEALTH_MAX_AGE_S:
                try:
                    self.store.check()
                    problem = None
                except StoreProblem as found:
                    problem = found.problem
                self._said(problem)
            return self._problem

    def failed(self, error: OSError) -> None:
        self._said(getattr(error, "problem", None) or "the image store failed")

    def _said(self, problem: str | None) -> None:
        if problem != self._problem:
            if problem is None:
                log.info("the image store answers again")
            else:
                log.warning("the image store: %s", problem)
        self._problem = problem
        self._checked_at = time.monotonic()


def unavailable(health: StoreHealth, error: OSError) -> ServiceUnavailable:
    health.failed(error)
    return ServiceUnavailable(STORE_UNREACHABLE, headers={"Retry-After": "5"})


def presigned(store: Store, key: str, presign_s: int) -> Response | None:
    """A redirect to the object itself, when presign_s asks for one (object stores only)."""
    if presign_s <= 0 or not store.remote:
        return None
    url = store.signed_url(key, presign_s)  # type: ignore[attr-defined]
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "private, no-store"})


async def open_stored(store: Store, key: str) -> StoredObject:
    """The object opened to read (FileNotFoundError when it is not there)."""
    if store.remote:
        return await run_in_threadpool(store.open, key)
    return store.open(key)


async def read_whole(store: Store, stored: StoredObject) -> bytes:
    if store.remote:
        return await run_in_threadpool(stored.reader.read)
    return stored.reader.read()


def content_disposition(filename: str) -> str:
    """As Starlette's FileResponse names a file, so both stores answer alike."""
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'


def chunks_of(stored: StoredObject) -> Iterator[bytes]:
    """The object's bytes a chunk at a time, closed at the end (Starlette runs this iterator on
    worker threads)."""
    with stored:
        while chunk := stored.reader.read(CHUNK_BYTES):
            yield chunk
