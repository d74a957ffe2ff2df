"""`htx api`: serve the app with uvicorn (httptools, uvloop), one worker."""

from __future__ import annotations

import logging
import signal

import uvicorn

from api.app import create_app
from models.config import Config

log = logging.getLogger("htx.api")


def serve(config: Config) -> bool:
    """Serve until SIGINT or SIGTERM; False if the server could not start (port in use...)."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=config.api.host,
            port=config.api.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            # A log line per request halves throughput (DESIGN.md): off unless asked for.
            access_log=config.api.access_log,
            # Our logging is already configured (daemon.logs); uvicorn's own would replace it.
            log_config=None,
            server_header=False,
        )
    )
    # While it serves, uvicorn handles these signals itself: it stops gracefully, then raises
    # them again, so that the handler found before it (the default: death by the signal) runs.
    # This handler is that one: it asks for a stop, which also covers a signal arriving before
    # uvicorn's own handlers are in place, and it turns the second delivery into exit status 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: setattr(server, "should_exit", True))
    try:
        server.run()
    except SystemExit as error:  # uvicorn exits when it cannot bind or the lifespan fails
        log.error("the API could not start (exit status %s)", error.code)
        return False
    return server.started
