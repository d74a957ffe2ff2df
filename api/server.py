"""`htx api`: serve the app with uvicorn (httptools, uvloop), one worker."""

from __future__ import annotations

import errno
import functools
import logging
import resource
import signal
import socket

import uvicorn

from api.app import create_app
from api.connections import ConnectionGuard, GuardedHttpToolsProtocol
from models.config import Config

log = logging.getLogger("htx.api")

# uvicorn's default: how long a connection may idle between requests (capped by
# api.header_timeout_s, the time allowed for a head once it has begun).
KEEP_ALIVE_S = 5.0
# Descriptors besides the client connections: the database, logs, listening sockets,
# thumbnails being read, uploads being staged.
OTHER_OPEN_FILES = 100


def serve(config: Config) -> bool:
    """Serve until SIGINT or SIGTERM; False if the server could not start (port in use...)."""
    api = config.api
    problem = listen_problem(api.host, api.port)
    if problem is not None:
        log.error("the API cannot start: %s (%s)", problem, config.source or "built-in defaults")
        return False
    allow_open_files(api.max_connections + OTHER_OPEN_FILES)
    guard = ConnectionGuard(max_connections=api.max_connections, header_timeout_s=api.header_timeout_s)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=api.host,
            port=api.port,
            loop="uvloop",
            http=functools.partial(GuardedHttpToolsProtocol, guard=guard),  # type: ignore[arg-type]
            ws="none",
            timeout_keep_alive=min(KEEP_ALIVE_S, api.header_timeout_s),  # type: ignore[arg-type]
            lifespan="on",
            # A log line per request halves throughput (DESIGN.md): off unless asked for.
            access_log=api.access_log,
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


def listen_problem(host: str, port: int) -> str | None:
    """Why the API could not listen on host:port, naming the key to change; None when it can.

    uvicorn would say only "[Errno 98] address already in use" and exit; a probe socket, bound
    as asyncio binds (SO_REUSEADDR) and closed at once, finds the same before it starts.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"api.host = {host!r} is not a name or address this machine knows ({error.strerror}): set api.host"
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return f"port {port} of {host} is in use by another program: stop it, or set api.port to a free port"
                if error.errno == errno.EACCES:
                    return f"port {port} needs privileges this user does not have: set api.port to 1024 or above"
                if error.errno == errno.EADDRNOTAVAIL:
                    return f"api.host = {host!r} is not an address of this machine: set api.host (127.0.0.1, 0.0.0.0)"
                return f"cannot listen on {host}:{port} ({error.strerror}): check api.host and api.port"
    return None


def allow_open_files(needed: int) -> int:
    """Raise this process's soft limit on open files towards `needed` (as far as the hard limit
    allows; many systems start services at 1024); warn when it stays short. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if raised > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "only %d open files are allowed, and api.max_connections needs about %d: raise the limit "
            "(LimitNOFILE= in the systemd unit, ulimit -n) or lower api.max_connections",
            soft,
            needed,
        )
    return soft
