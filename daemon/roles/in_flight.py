"""The work of one daemon process that is not finished: files offered and not yet registered
(each counted once), and claims in hand. `Daemon.wait_idle` waits on it; a caption batch
waits for the images whose stages run now (`preparing`), never for images that are not coming."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A file that arrived in the inbox: its path and inode. A new file at the same path (an upload
# renamed in as the last one with that name leaves) is another arrival.
Arrival = tuple[Path, int]


class InFlight:
    def __init__(self) -> None:
        self._state = threading.Condition()
        self._arrivals: set[Arrival] = set()
        self._outstanding = 0
        self._preparing = 0

    @property
    def outstanding(self) -> int:
        return self._outstanding

    @property
    def preparing(self) -> int:
        """Images whose stages run now, their caption to be made next in this process."""
        return self._preparing

    def arrive(self, arrival: Arrival) -> bool:
        """Count a file offered; False if it is counted already (offered again meanwhile)."""
        with self._state:
            if arrival in self._arrivals:
                return False
            self._arrivals.add(arrival)
            self._outstanding += 1
            return True

    def begin(self) -> None:
        """Count a claim taken in hand."""
        with self._state:
            self._outstanding += 1

    def end(self, arrival: Arrival | None = None, *, counted: bool = True) -> None:
        """Forget `arrival`, and count one piece of work done."""
        with self._state:
            if arrival is not None:
                self._arrivals.discard(arrival)
            if counted:
                self._outstanding -= 1
            self._state.notify_all()

    def wait_for_none(self, timeout: float) -> bool:
        with self._state:
            return self._state.wait_for(lambda: self._outstanding == 0, timeout=timeout)

    @contextmanager
    def preparing_one(self, counted: bool) -> Iterator[None]:
        if counted:
            with self._state:
                self._preparing += 1
        try:
            yield
        finally:
            if counted:
                with self._state:
                    self._preparing -= 1
