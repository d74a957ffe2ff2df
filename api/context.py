"""What every request handler needs: the configuration and the read-only database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Concatenate, ParamSpec, TypeVar

from anyio import to_thread
from sqlalchemy import Connection, Engine
from starlette.datastructures import URL
from starlette.requests import Request

from models.config import Config

P = ParamSpec("P")
T = TypeVar("T")


class Reader:
    """Runs read queries (functions of models.queries) on one read-only connection.

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
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None
        self._inline = engine.dialect.name == "sqlite"
        # Counts connections opened: what one connection says (PRAGMA data_version) is only
        # comparable with what the same connection said before.
        self.generation = 0

    async def run(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._inline:
            return self.run_sync(query, *args, **kwargs)
        return await to_thread.run_sync(lambda: self._run_pooled(query, *args, **kwargs))

    def _run_pooled(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self.engine.connect() as connection:
            result = query(connection, *args, **kwargs)
            connection.rollback()
        return result

    def run_sync(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
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
    key: tuple[int, int]  # (reader generation, data_version)
    made_at: float  # monotonic
    stats: dict[str, Any]
    body: bytes  # `stats`, encoded


@dataclass
class ApiContext:
    """Set on `app.state.api` by create_app; the lifespan fills in the reader."""

    config: Config
    schema_head: str
    openapi: dict[str, Any]
    reader: Reader | None = None
    stats: CachedStats | None = None


def context(request: Request) -> ApiContext:
    return request.app.state.api


def reader(request: Request) -> Reader:
    found = context(request).reader
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
