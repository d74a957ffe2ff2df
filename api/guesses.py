"""Failed token guesses, counted per client address, so that guessing a token is slow.

Unthrottled, one connection checked about 3,200 wrong tokens a second. Here a client's first
FREE_FAILURES wrong tokens cost nothing (a person mistyping); each one after that holds the
client back for twice as long as the one before (half a second, then 1, 2, 4 s ... at most
MAX_HOLD_S), and while it is held back every token it sends (read, upload, sign-in) is
answered 429 with Retry-After, without being looked at: were a right token let through, the
answer would still tell right from wrong at full speed. The count halves every HALF_LIFE_S
without failures; only a failure holds a client back, so one that sends the right token
after its hold is let in.

A burst is logged once, as it starts being held back, and not again until its count has
decayed (the client was quiet): a guessing client leaves one WARNING line, not one a request.

The table keeps at most MAX_CLIENTS addresses, the least recently failing dropped first, so
many addresses cannot make it grow without bound.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("htx.api.access")

FREE_FAILURES = 5
FIRST_HOLD_S = 0.5
MAX_HOLD_S = 60.0
# Slow enough that a client waiting as told still reaches MAX_HOLD_S (a patient guesser gets
# about one guess a minute), quick enough that a person who mistyped is not held back for long.
HALF_LIFE_S = 600.0
MAX_CLIENTS = 4096
# Below this count a client's burst is over: its next held-back burst is logged again.
QUIET_BELOW = 1.0


@dataclass
class _Client:
    failures: float
    at: float  # when `failures` was last brought up to date
    held_until: float = 0.0
    logged: bool = False


class FailedGuesses:
    """The failed token checks of recent clients (state: one instance per app). Used from the
    event loop only (every token check is in middleware or an async handler), so unlocked."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_clients: int = MAX_CLIENTS) -> None:
        self._clock = clock
        self._max_clients = max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def retry_after(self, client: str) -> float:
        """Seconds `client` must wait before its next token is checked; 0 when it may now."""
        entry = self._clients.get(client)
        if entry is None:
            return 0.0
        return max(0.0, entry.held_until - self._clock())

    def failed(self, client: str) -> None:
        """Count a wrong token from `client`; past FREE_FAILURES it is held back."""
        now = self._clock()
        entry = self._clients.pop(client, None)
        if entry is None:
            entry = _Client(failures=0.0, at=now)
        self._decay(entry, now)
        if entry.failures < QUIET_BELOW:
            entry.logged = False
        entry.failures += 1
        over = entry.failures - FREE_FAILURES
        if over > 0:
            entry.held_until = now + min(MAX_HOLD_S, FIRST_HOLD_S * 2 ** math.floor(over - 1e-9))
            if not entry.logged:
                entry.logged = True
                log.warning(
                    "%d wrong tokens from %s in a short time: its tokens are answered 429, for longer each time, while it goes on",
                    round(entry.failures),
                    client or "an unknown address",
                )
        self._clients[client] = entry  # the most recent last: the oldest goes first
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)

    @staticmethod
    def _decay(entry: _Client, now: float) -> None:
        entry.failures *= 0.5 ** ((now - entry.at) / HALF_LIFE_S)
        entry.at = now


def client_address(scope: dict) -> str:
    """The address a request came from (the connection's peer), "" when unknown."""
    client = scope.get("client")
    return client[0] if client else ""
