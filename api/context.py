"""What every request handler needs: the configuration, the read-only database, and a
connection for the few requests that change images."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio
from anyio import to_thread
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import URL
from starlette.requests import Request

from api.errors import DATABASE_UNAVAILABLE, ServiceUnavailable
from api.guesses import FailedGuesses
from api.stored_files import StoreHealth
from api.faults import Faults
from models import status_reads
from models.config import Config
from models.db import READER_POOL_SIZE, make_engine, missing_database
from models.store import Store

# Worker threads running PostgreSQL queries at once (models.db keeps as many connections).
READER_THREADS = READER_POOL_SIZE
# Writes at once, on threads of their own: never anyio's shared pool, so a write waiting on a
# lock holds no thread a read (or a file check of GET /original) needs. 60 reprocesses blocked
# by a lock made a GET /original of another image wait 36 s.
WRITER_THREADS = 1
# How long a write waits for its turn before it is answered 503: the database's own lock
# timeout bounds the one running.
WRITE_QUEUE_TIMEOUT_S = 15.0
WRITES_BUSY = "The server is busy with other changes to images: try again shortly."

P = ParamSpec("P")
T = TypeVar("T")


class Reader:
    """Runs read queries (functions of the models.*_reads modules) on one read-only connection.

    Queries run on the event loop itself. They are point lookups, index range reads and a few
    small aggregates, mostly under 0.1 ms; measured here, a hop to a worker thread cost more
    than the query (the detail route served a third as many requests with one), and it made
    every read contend for the GIL with the loop. The cost is that a slow read would stall
    the loop; in WAL mode SQLite readers do not wait on the writer, so none is expected.

    The one connection is kept open (a pool check-out and check-in per request cost more than
    the query too), and each query runs in its own read transaction, ended at once: the next
    query sees the daemon's newest commits, and no snapshot held open stops the daemon from
    checkpointing its WAL.

    PostgreSQL is another server: a query waits on the network, and on an unreachable server
    for as long as the connect timeout. There each query runs on a worker thread, on a
    connection of the engine's pool, so the loop never waits and requests run side by side.
    The reader's engine checks no connection before use (models.db: a round trip per
    request); a query that finds its connection closed by the server (restarted, or ending
    idle sessions) runs once more on a new one, so that costs no failed request. A server
    that is down fails the second try too, at once (or after the connect timeout), and the
    request is answered 503; later requests find no connection to reuse and fail as fast.
    """

    def __init__(self, engine: Engine, faults: Faults | None = None) -> None:
        self.engine = engine
        self.faults = faults if faults is not None else Faults()
        self._connection: Connection | None = None
        self._inline = engine.dialect.name == "sqlite"
        # Counts connections opened: what one connection says (PRAGMA data_version) is only
        # comparable with what the same connection said before.
        self.generation = 0
        # PostgreSQL: queries at once, no more than the pool keeps open. Past that, the pool
        # opened a connection for each extra one and closed it after (a new server process
        # each time): under 16 concurrent requests, 579 detail requests a second instead of
        # 1,000 and more.
        self._threads = anyio.CapacityLimiter(READER_THREADS)
        # Held while /api/stats computes its answer, so that requests arriving meanwhile wait
        # for it rather than compute it too (api.status.get_stats).
        self.stats_lock = anyio.Lock()
        # data_version's reads: callers counted as they come, and the last read with the
        # count of callers it answers (those that came before it started), and its outcome.
        self._version_lock = anyio.Lock()
        self._version_callers = 0
        self._version_read: tuple[int, int | str | None, Exception | None] = (0, None, None)

    async def run(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._inline:
            return self.run_sync(query, *args, **kwargs)
        result = await to_thread.run_sync(lambda: self._run_pooled(query, *args, **kwargs), limiter=self._threads)
        self.faults.succeeded()
        return result

    async def probe(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`run`, for /healthz: its success says nothing of the tables other reads wait on,
        so it does not clear a problem they met."""
        if self._inline:
            return self._run_inline(query, *args, **kwargs)
        return await to_thread.run_sync(lambda: self._run_pooled(query, *args, **kwargs), limiter=self._threads)

    async def run_apart(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """On a worker thread and a connection of the pool, on SQLite too: for the rare query
        that reads many rows (/metrics), which inline would hold up every other request."""
        result = await to_thread.run_sync(lambda: self._run_on_pool(query, *args, **kwargs), limiter=self._threads)
        self.faults.succeeded()
        return result

    async def data_version(self) -> int | str | None:
        """status_reads.data_version, as read after this call began: equal to what an earlier
        call returned only if nothing was committed in between.

        SQLite reads it inline (a pragma, no I/O). PostgreSQL's read is a round trip on a
        worker thread, as costly as the rest of a cached /api/stats request many times over,
        and under load many requests want it at once: so a caller that comes while a read is
        under way waits for the next one, which starts after it came, and shares it with
        every other caller that came before it started. A failed read fails them all alike
        (a server that is down costs one connection attempt, not one per waiting request).
        """
        if self._inline:
            return self.run_sync(status_reads.data_version)
        self._version_callers += 1
        ticket = self._version_callers
        async with self._version_lock:
            answered, value, error = self._version_read
            if answered < ticket:  # no read has started since this caller came: one now
                answered = self._version_callers
                try:
                    value, error = await self.run(status_reads.data_version), None
                except Exception as failure:  # noqa: BLE001 - kept for the callers it answers
                    value, error = None, failure
                self._version_read = (answered, value, error)
        if error is not None:
            raise error
        return value

    def _run_pooled(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return self._run_on_pool(query, *args, **kwargs)
        except DBAPIError as error:
            # SQLAlchemy invalidated the connection, and with it every connection the pool
            # opened before: the retry opens a new one. The query only read: running it again
            # is safe.
            if not error.connection_invalidated:
                raise
        return self._run_on_pool(query, *args, **kwargs)

    def _run_on_pool(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self.engine.connect() as connection:
            result = query(connection, *args, **kwargs)
            connection.rollback()
        return result

    def run_sync(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        result = self._run_inline(query, *args, **kwargs)
        self.faults.succeeded()
        return result

    def _run_inline(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        connection = self._connection
        if connection is None:
            connection = self._connection = self.engine.connect()
            self.generation += 1
        try:
            result = query(connection, *args, **kwargs)
        except BaseException:
            # Start afresh next time: the error may have left the connection unusable (the
            # database file was missing, replaced, or not created yet).
            self.close()
            raise
        connection.rollback()
        return result

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.invalidate()
            connection.close()


@dataclass(frozen=True)
class CachedStats:
    key: tuple[int, int | str | None]  # (reader generation, data_version)
    made_at: float  # monotonic
    stats: dict[str, Any]
    body: bytes  # `stats`, encoded


class Writer:
    """Short write transactions (functions of models.actions) for the few requests that change
    images: delete, reprocess, recaption. One connection of its own, opened when first needed
    and used by one request at a time, on a worker thread: a write may wait on the daemon's
    (SQLite's busy timeout), and the event loop must not.

    It never creates the database: until the daemon has, there is nothing to change.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._turn = anyio.Semaphore(WRITER_THREADS)
        self._threads = anyio.CapacityLimiter(WRITER_THREADS)

    async def run(self, action: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            with anyio.fail_after(WRITE_QUEUE_TIMEOUT_S):
                await self._turn.acquire()
        except TimeoutError:
            raise ServiceUnavailable(WRITES_BUSY, headers={"Retry-After": "5"}) from None
        try:
            return await to_thread.run_sync(lambda: self._run(action, *args, **kwargs), limiter=self._threads)
        finally:
            self._turn.release()

    def _run(self, action: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        if missing_database(self.url) is not None:
            raise ServiceUnavailable(DATABASE_UNAVAILABLE, headers={"Retry-After": "5"})
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.url, application_name="htx-api-writes")
            with self._engine.begin() as connection:
                return action(connection, *args, **kwargs)

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


@dataclass
class ApiContext:
    """Set on `app.state.api` by create_app; the lifespan fills in the reader and the writer."""

    config: Config
    store: Store
    store_health: StoreHealth
    schema_head: str
    openapi: dict[str, Any]
    reader: Reader | None = None
    writer: Writer | None = None
    stats: CachedStats | None = None
    # Search by meaning (api.meaning.MeaningSearch); None when search.model is "none".
    meaning: Any = None
    # Wrong tokens by client address, for every place a token is checked (api.access).
    guesses: FailedGuesses = field(default_factory=FailedGuesses)
    faults: Faults = field(default_factory=Faults)


def context(request: Request) -> ApiContext:
    return request.app.state.api


def reader(request: Request) -> Reader:
    found = context(request).reader
    assert found is not None, "the app's lifespan has not run (use `with TestClient(app)`)"
    return found


def writer(request: Request) -> Writer:
    found = context(request).writer
    assert found is not None, "the app's lifespan has not run (use `with TestClient(app)`)"
    return found


def base_url(request: Request) -> str:
    """Where the API is reachable from the client: api.public_url, else the request's own."""
    configured = context(request).config.api.public_url
    if configured:
        return configured.rstrip("/")
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    root_path = scope.get("app_root_path", scope.get("root_path", ""))
    server = scope.get("server")
    return _request_base(scope.get("scheme", "http"), host, tuple(server) if server else None, root_path)


@lru_cache(maxsize=256)
def _request_base(scheme: str, host: bytes | None, server: tuple[str, int] | None, root_path: str) -> str:
    """Starlette's own reading of scheme, Host and server, cached: building the URL costs more
    than a detail query, and a server sees few distinct hosts."""
    scope = {
        "type": "http",
        "scheme": scheme,
        "server": server,
        "path": root_path + "/",
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", host)] if host is not None else [],
    }
    return str(URL(scope=scope)).rstrip("/")
