"""What every request handler needs: the configuration and the read-only database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from models.config import Config

P = ParamSpec("P")
T = TypeVar("T")


class Reader:
    """Runs read queries (functions of models.queries) on the read-only engine.

    Queries run on Starlette's thread pool, never on the event loop: a read can wait on
    SQLite's busy timeout (the daemon checkpointing its WAL) and that must not stall every
    other request.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def run(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await run_in_threadpool(self.run_sync, query, *args, **kwargs)

    def run_sync(self, query: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self.engine.connect() as connection:
            return query(connection, *args, **kwargs)


@dataclass
class ApiContext:
    """Set on `app.state.api` by create_app; the lifespan fills in the reader."""

    config: Config
    schema_head: str
    openapi: dict[str, Any]
    reader: Reader | None = None


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
    return str(request.base_url).rstrip("/")
