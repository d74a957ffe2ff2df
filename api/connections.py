"""The HTTP connections under the app: uvicorn's httptools protocol, with the limits it lacks.

uvicorn (0.54, httptools) bounds neither the size nor the duration of a request head:
httptools buffers whatever arrives (one 200 MB header took the API to 480 MB), and a client
that never finishes its head keeps its connection, and a file descriptor, for ever; about a
thousand of those and the server cannot accept anyone. When it answers before the request
body is in (a 413), it either reads the whole body, however large, to keep the connection, or,
if the client asked for a close, closes with the body unread, so the kernel answers the
client's next bytes with a reset, which can destroy the answer before the client has read it.
`GuardedHttpToolsProtocol` adds:

- a cap on the bytes of a request head (MAX_HEAD_BYTES): 431, then a lingering close;
- a time limit on receiving a request head (api.header_timeout_s), from the connection's
  start or the head's first byte: 408 (or a plain close when nothing came), checked by one
  lazy timer per connection, never re-armed per request;
- a cap on open connections (api.max_connections): a connection beyond it takes the place of
  the one that has waited longest for a request (idle, or sending a slow head), so idle or
  slow connections cannot lock anyone out; when every connection is serving a request, the
  new one is closed at once (cheaper than uvicorn's limit_concurrency, which still reads the
  request to answer 503);
- a lingering close, as nginx's: an answer that starts before its request body is all in
  says "connection: close"; the connection is then half-closed, and the rest of the body is
  read and thrown away (up to LINGER_MAX_BYTES, LINGER_MAX_S, LINGER_IDLE_S) before the
  close, so that the client, still sending, reads the answer.

The keep-alive timeout is uvicorn's own (timeout_keep_alive, set by api.server).
Per request, the cost is a few attribute operations, a clock read and a dict insert and pop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

log = logging.getLogger("htx.api")

# Request line and headers together. Browsers send a few KiB; localhost collects the cookies
# of every development server on the machine, so this is well above nginx's usual 8-32 KiB.
MAX_HEAD_BYTES = 64 * 1024
# A lingering close reads at most this much, for at most this long, and gives up on a client
# that has sent nothing for LINGER_IDLE_S (nginx: lingering_time 30 s, lingering_timeout 5 s).
LINGER_MAX_BYTES = 128 * 1024 * 1024
LINGER_MAX_S = 30.0
LINGER_IDLE_S = 5.0
# uvloop's clock moves in milliseconds: a timer may fire this early.
_TIMER_SLACK_S = 0.005
_LIMIT_WARNING_INTERVAL_S = 60.0


def error_bytes(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer {"error": message} that closes the connection, for answers given
    below the app (it never saw the request)."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


HEAD_TOO_LARGE = error_bytes(
    431, "Request Header Fields Too Large", f"The request line and headers are over {MAX_HEAD_BYTES:,} bytes."
)


class _Displaceable(Protocol):
    def displace(self) -> None: ...


@dataclass(eq=False)
class ConnectionGuard:
    """What the connections of one server share: the limits, and the connections that are not
    serving a request (the ones a new connection may displace), longest waiting first."""

    max_connections: int
    header_timeout_s: float
    waiting: dict[_Displaceable, None] = field(default_factory=dict)
    _warned_at: float = -math.inf

    def __post_init__(self) -> None:
        self.head_timed_out = error_bytes(
            408, "Request Timeout", f"The request line and headers did not arrive within {self.header_timeout_s:g} s."
        )

    def make_room(self, connections: set[Any], now: float) -> bool:
        """Whether one more connection may be served: below the cap, or after closing the one
        that has waited longest for a request. False when every connection is busy."""
        if len(connections) < self.max_connections:
            return True
        oldest = next(iter(self.waiting), None)
        if now - self._warned_at >= _LIMIT_WARNING_INTERVAL_S:
            self._warned_at = now
            log.warning(
                "api.max_connections (%d) reached: %s",
                self.max_connections,
                "closing the connections that wait longest" if oldest else "refusing new connections",
            )
        if oldest is None:
            return False
        oldest.displace()
        return True


class _LingerOnClose:
    """The transport of a request whose body is still arriving, as uvicorn's response cycle
    uses it (write, is_closing, close), except that closing lingers. Holds the request's own
    keep-alive, which applies again once the whole body is in."""

    __slots__ = ("_protocol", "is_closing", "keep_alive", "write")

    def __init__(self, protocol: GuardedHttpToolsProtocol, keep_alive: bool) -> None:
        self._protocol = protocol
        self.keep_alive = keep_alive
        self.write = protocol.transport.write
        self.is_closing = protocol.transport.is_closing

    def close(self) -> None:
        self._protocol.close_after_response()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of this module; pass
    `functools.partial(GuardedHttpToolsProtocol, guard=...)` as uvicorn.Config's `http`."""

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self.refused = False
        self.lingering = False
        # Bytes of the request head being received, and when its wait began (the connection's
        # start, or the head's first byte); None while a request is being served or the
        # connection idles between requests (uvicorn's keep-alive timeout covers that).
        self.head_bytes = 0
        self.head_started: float | None = None
        self.head_timer: asyncio.TimerHandle | None = None

    # -- connection ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        now = self.loop.time()
        if not self.guard.make_room(self.connections, now):
            self.refused = True
            transport.close()
            return
        super().connection_made(transport)
        self.guard.waiting[self] = None
        self.head_started = now
        self.head_timer = self.loop.call_at(now + self.guard.header_timeout_s, self._check_head_time)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self._forget()
        super().connection_lost(exc)

    def displace(self) -> None:
        """Closed to make room for a new connection (this one waits for a request)."""
        self._forget()
        self.connections.discard(self)
        self.transport.close()

    def _forget(self) -> None:
        self.guard.waiting.pop(self, None)
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    # -- request heads -------------------------------------------------------------------------

    def _unsupported_upgrade_warning(self) -> None:
        # The API has no WebSockets (ws="none"): an Upgrade header is answered as plain HTTP,
        # and two warnings per such request would let any client fill the log.
        self.logger.debug("Upgrade header ignored: the API has no WebSockets")

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body:  # a request body: uvicorn's own path
            super().data_received(data)
            if not cycle.more_body and not cycle.response_started and isinstance(cycle.transport, _LingerOnClose):
                cycle.keep_alive = cycle.transport.keep_alive  # all in: the answer may keep the connection
            return
        # A request head is arriving: the first, or the next one on a kept-alive connection.
        if self.head_started is None:
            self.head_started = self.loop.time()
        self.head_bytes += len(data)
        super().data_received(data)
        if self.cycle is not cycle:  # the head is complete: a request is being served
            self.head_bytes = 0
            self.head_started = None
            self.guard.waiting.pop(self, None)
            if self.cycle.more_body:  # and its body is still to come
                self._answer_before_body_closes(self.cycle)
        elif self.head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(HEAD_TOO_LARGE, linger=True)

    def _answer_before_body_closes(self, cycle: RequestResponseCycle) -> None:
        """An answer that starts before the request body is all in says "connection: close"
        (uvicorn writes it when keep_alive is off), so that no client sends its next request
        on a connection that is going away; then the close lingers."""
        cycle.transport = _LingerOnClose(self, cycle.keep_alive)  # type: ignore[assignment]
        cycle.keep_alive = False

    def _check_head_time(self) -> None:
        """The lazy timer: closes a connection whose head has taken too long, else waits again
        until the current head's deadline (or one timeout from now)."""
        self.head_timer = None
        if self.transport.is_closing() or self.lingering:
            return
        timeout = self.guard.header_timeout_s
        now = self.loop.time()
        started = self.head_started
        if started is not None and started + timeout <= now + _TIMER_SLACK_S:
            if self.head_bytes:
                self._refuse(self.guard.head_timed_out, linger=False)
            else:  # nothing sent: nobody to tell
                self.transport.close()
            return
        self.head_timer = self.loop.call_at((started if started is not None else now) + timeout, self._check_head_time)

    def _refuse(self, answer: bytes, *, linger: bool) -> None:
        """Answer below the app and close; never in the middle of an answer already going out."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self.transport.close()
            return
        self.transport.write(answer)
        if linger:
            self._linger()
        else:
            self.transport.close()

    # -- responses -----------------------------------------------------------------------------

    def on_response_complete(self) -> None:
        if self.lingering:  # the answer came before the body, and the connection is a _Drain now
            self.server_state.total_requests += 1
            return
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle until the next request
            self.guard.waiting[self] = None

    def close_after_response(self) -> None:
        """The response cycle closes the connection: linger if the request body is still coming."""
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            self._linger()
        else:
            self.transport.close()

    def _linger(self) -> None:
        """Hand the connection to a _Drain, which is what it is from now on."""
        self.lingering = True
        self._forget()
        self._unset_keepalive_if_required()
        self.connections.discard(self)
        drain = _Drain(self.transport, self.guard, self.connections, self.loop)
        self.transport.set_protocol(drain)
        drain.start()


class _Drain(asyncio.Protocol):
    """A connection that has had its answer: half-closed (the answer, then end of file), it reads
    and throws away what the client still sends, so that the client, still writing its body, gets
    no reset and reads the answer; closed at the client's end of file or at a LINGER_ bound."""

    def __init__(
        self, transport: asyncio.Transport, guard: ConnectionGuard, connections: set[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.transport = transport
        self.guard = guard
        self.connections = connections
        self.loop = loop
        self.bytes_left = LINGER_MAX_BYTES
        self.last_data = loop.time()
        self.deadline = self.last_data + LINGER_MAX_S
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        # Counted like any connection (it holds a descriptor) and the first to be displaced.
        self.connections.add(self)
        self.guard.waiting[self] = None
        self.transport.write_eof()  # sent once the answer has been written
        self.transport.resume_reading()  # uvicorn may have paused it while the app was busy
        self.timer = self.loop.call_at(self.last_data + LINGER_IDLE_S, self._check_time)

    def data_received(self, data: bytes) -> None:
        self.bytes_left -= len(data)
        if self.bytes_left < 0:
            self.transport.close()
        else:
            self.last_data = self.loop.time()

    def eof_received(self) -> bool:
        return False  # the client has sent everything: close

    def _check_time(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        due = min(self.deadline, self.last_data + LINGER_IDLE_S)
        if due <= self.loop.time() + _TIMER_SLACK_S:
            self.transport.close()
        else:
            self.timer = self.loop.call_at(due, self._check_time)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.guard.waiting.pop(self, None)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def displace(self) -> None:
        self.connections.discard(self)
        self.guard.waiting.pop(self, None)
        self.transport.close()

    def shutdown(self) -> None:
        """uvicorn's server calls this on every connection when it stops."""
        self.transport.close()
