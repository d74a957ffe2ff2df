"""`create_app(config)`: the Starlette application of the read API and uploads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware

from api.access import ReadTokenCheck
from api.context import ApiContext, Reader, Writer
from api.docs import openapi_schema
from api.errors import EXCEPTION_HANDLERS
from api.gallery import gallery_routes, load_assets
from api.hosts import HostAndOriginCheck
from api.meaning import MeaningSearch
from api.metrics import RequestMetrics
from api.routes import ROUTES
from api.uploads import remove_stale_parts
from models.config import Config
from models.db import make_engine
from models.migrate import head_revision
from api.stored_files import StoreHealth
from models.stores import open_store

log = logging.getLogger("htx.api")


def _version() -> str:
    try:
        return version("htx")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


async def _fill_index(context: ApiContext) -> None:
    try:
        await context.meaning.refresh(context.reader)
    except Exception as error:  # noqa: BLE001 - no database yet, or down: the first search reads it
        log.info("search index not read at start (%s): the first search reads it", type(error).__name__)


def create_app(config: Config) -> Starlette:
    """The API over `config`'s database, which it reads on a read-only connection (SQLite
    mode=ro); the few requests that change images write on a connection of their own.

    The database need not exist yet: until the daemon has created it, reads answer 503 and
    uploads are queued in the inbox.
    """
    head = head_revision()
    assert head is not None, "no migrations shipped"
    store = open_store(config)
    context = ApiContext(config=config, store=store, store_health=StoreHealth(store), schema_head=head, openapi=openapi_schema(ROUTES, _version()))
    if config.search.enabled:
        context.meaning = MeaningSearch(config.search, config.base_dir)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = make_engine(config.database_url, readonly=True, application_name="htx-api")
        context.reader = Reader(engine, context.faults)
        context.writer = Writer(config.database_url)
        if store.remote:
            # This machine's folder holds only uploads on their way in: the images are in the
            # bucket, and the daemon that makes the folder may run elsewhere.
            try:
                config.uploads_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                log.warning("cannot make the folder for uploads: %s", error.strerror)
        removed = remove_stale_parts(config.uploads_dir)
        if removed:
            log.info("removed %d unfinished upload(s) left in %s", removed, config.uploads_dir)
        filling = None
        if context.meaning is not None:
            # The index is read at start, beside the first requests: a search waits for it.
            filling = asyncio.get_running_loop().create_task(_fill_index(context))
        try:
            yield
        finally:
            if filling is not None:
                # Not cancelled: its read runs on a worker thread, which a cancel would leave
                # holding a connection of the pool disposed of below.
                await asyncio.gather(filling, return_exceptions=True)
            if context.meaning is not None:
                await context.meaning.settle()
            context.reader.close()
            context.reader = None
            context.writer.close()
            context.writer = None
            engine.dispose()

    routes = [*ROUTES, *gallery_routes(load_assets())]
    # This app's own: tests make many apps in one process, and prometheus_client's default
    # registry would refuse a second set of the same metrics.
    metrics_registry = CollectorRegistry(auto_describe=True)
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestMetrics, registry=metrics_registry),
            Middleware(HostAndOriginCheck, api=config.api),
            Middleware(ReadTokenCheck, api=config.api, guesses=context.guesses),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.api = context
    app.state.metrics_registry = metrics_registry
    return app
