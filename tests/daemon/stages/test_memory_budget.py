"""DecodeBudget: reservations that do not fit wait their turn, in order; a stop ends a wait."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from daemon.stages.memory_budget import DecodeBudget, DecodeStopped
from tests.helpers import wait_for


class Holder:
    """A thread that reserves `nbytes`, says when it is in, and holds them until let go."""

    def __init__(self, budget: DecodeBudget, nbytes: int) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self._budget = budget
        self._nbytes = nbytes
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._budget.reserve(self._nbytes):
                self.entered.set()
                assert self.release.wait(timeout=10), "never let go"
        except BaseException as error:  # noqa: BLE001 - handed to the test
            self.error = error

    def finish(self) -> None:
        self.release.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()

    def join(self) -> None:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()


def _waiting(budget: DecodeBudget, count: int) -> Callable[[], bool]:
    return lambda: budget.waiting == count


def test_reservations_that_fit_together_run_together() -> None:
    budget = DecodeBudget(100)
    with budget.reserve(40):
        second = Holder(budget, 60)
        assert second.entered.wait(timeout=10)
        assert budget.held_bytes == 100
        second.finish()
    assert budget.held_bytes == 0


def test_two_reservations_over_the_limit_run_one_after_the_other() -> None:
    budget = DecodeBudget(100)
    first = Holder(budget, 60)
    assert first.entered.wait(timeout=10)
    second = Holder(budget, 60)
    wait_for(_waiting(budget, 1), what="the second reservation to wait")
    assert not second.entered.is_set()  # 60 + 60 > 100: it waits inside reserve
    assert budget.held_bytes == 60
    first.finish()
    assert second.entered.wait(timeout=10)
    assert budget.held_bytes == 60 and budget.waiting == 0
    second.finish()
    assert budget.held_bytes == 0
    assert first.error is None and second.error is None


def test_a_reservation_over_the_whole_limit_runs_alone_and_in_its_turn() -> None:
    budget = DecodeBudget(100)
    alone = Holder(budget, 500)
    assert alone.entered.wait(timeout=10), "alone, it must not wait for ever"
    assert budget.held_bytes == 500
    alone.finish()
    small = Holder(budget, 10)
    assert small.entered.wait(timeout=10)
    huge = Holder(budget, 500)
    wait_for(_waiting(budget, 1), what="the huge reservation to wait for the small one")
    # A later small one would fit beside the first, but does not overtake the huge one.
    later = Holder(budget, 10)
    wait_for(_waiting(budget, 2), what="the later small reservation to queue")
    assert not huge.entered.is_set() and not later.entered.is_set()
    small.finish()
    assert huge.entered.wait(timeout=10)
    assert budget.held_bytes == 500
    assert budget.waiting == 1 and not later.entered.is_set()  # nothing runs beside it
    huge.finish()
    assert later.entered.wait(timeout=10)
    later.finish()
    assert budget.held_bytes == 0


def test_an_error_in_the_body_gives_the_bytes_back() -> None:
    budget = DecodeBudget(100)
    with pytest.raises(RuntimeError), budget.reserve(80):
        raise RuntimeError("decode failed")
    assert budget.held_bytes == 0
    with budget.reserve(100):
        assert budget.held_bytes == 100


def test_a_stop_wakes_a_waiter_with_decode_stopped() -> None:
    stop = threading.Event()
    budget = DecodeBudget(100, stop=stop)
    holder = Holder(budget, 100)
    assert holder.entered.wait(timeout=10)
    waiter = Holder(budget, 50)
    wait_for(_waiting(budget, 1), what="the reservation to wait")
    stop.set()
    waiter.join()  # within the poll interval, not when the holder lets go
    assert isinstance(waiter.error, DecodeStopped)
    assert not waiter.entered.is_set()
    assert budget.waiting == 0 and budget.held_bytes == 100  # the stopped one took nothing
    holder.finish()
    assert budget.held_bytes == 0
    # Stopping only ends waits: a decode that fits at once still runs (it finishes its image).
    with budget.reserve(50):
        assert budget.held_bytes == 50


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DecodeBudget(0)
