"""The claims this process holds now, and the give-backs it still owes.

A claim is held from the moment a worker takes it until its outcome is recorded or it is given
back. The lease thread renews exactly these, by id: a claim that no thread holds any more must
lapse or be put back, never be kept alive by a process that forgot it (an image in hand when a
fault hit used to stay `processing` for good that way).

A give-back can fail for the very fault that interrupted the image (the database is down, the
disk that holds SQLite is full). It is then owed: kept, renewed meanwhile so that no other
process counts the outage as a failed attempt, and tried again until it goes through.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any


class HeldClaims:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[int] = set()
        self._owed: dict[int, dict[str, Any]] = {}  # image id -> the values of its give-back
        # Ids the database said this process claims while no thread held them, at the last
        # check: only those found so twice in a row are orphans (a claim just taken is in
        # the database a moment before its worker holds it).
        self._unaccounted: set[int] = set()

    def hold(self, image_ids: Iterable[int]) -> None:
        with self._lock:
            self._held.update(image_ids)

    def let_go(self, image_id: int) -> None:
        """Its outcome is recorded, it was given back, or it is owed (then it stays renewed)."""
        with self._lock:
            self._held.discard(image_id)

    def owe(self, image_id: int, values: dict[str, Any]) -> None:
        """Its give-back failed: to be tried again (with `values`, where its bytes are now)."""
        with self._lock:
            self._owed[image_id] = values

    def settled(self, image_id: int) -> None:
        """An owed give-back went through, or the claim was found lost meanwhile."""
        with self._lock:
            self._owed.pop(image_id, None)

    def owed(self) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return list(self._owed.items())

    def renewable(self) -> list[int]:
        """The claims whose leases this process keeps: held, or owed a give-back."""
        with self._lock:
            return sorted(self._held | self._owed.keys())

    def orphans(self, claimed: Iterable[int]) -> list[int]:
        """Of the ids the database says this process claims, those no thread held at this
        check nor at the one before."""
        with self._lock:
            unaccounted = set(claimed) - self._held - self._owed.keys()
            orphans = sorted(unaccounted & self._unaccounted)
            self._unaccounted = unaccounted - set(orphans)
            return orphans

    def __len__(self) -> int:
        with self._lock:
            return len(self._held | self._owed.keys())
