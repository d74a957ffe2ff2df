"""Waiting out faults of the environment: one log line per change, growing pauses, prompt stops."""

from __future__ import annotations

import logging
import threading

import pytest

from daemon import outage as outage_module
from daemon.errors import EnvironmentFault
from daemon.outage import Outage
from tests.helpers import wait_for

FULL = EnvironmentFault("data disk full", "No space left on device")


class Machine:
    """A check that fails while `broken` is set, counting its calls."""

    def __init__(self) -> None:
        self.broken = True
        self.checks = 0
        self.changes: list[str | None] = []

    def check(self) -> None:
        self.checks += 1
        if self.broken:
            raise FULL


@pytest.fixture(autouse=True)
def quick_pauses(monkeypatch) -> None:
    monkeypatch.setattr(outage_module, "FIRST_PAUSE_S", 0.01)
    monkeypatch.setattr(outage_module, "MAX_PAUSE_S", 0.08)


def test_all_is_well_until_a_fault_is_reported() -> None:
    machine = Machine()
    outage = Outage(machine.check, machine.changes.append)
    assert outage.wait_turn(threading.Event()) and machine.checks == 0
    assert outage.problem is None


def test_a_fault_is_logged_once_checked_with_growing_pauses_and_resolved(caplog) -> None:
    caplog.set_level(logging.INFO, logger="htx.daemon")
    machine = Machine()
    outage = Outage(machine.check, machine.changes.append)
    for _ in range(5):  # several threads hitting the same fault
        outage.report(FULL)
    assert outage.problem == "data disk full"

    released = threading.Event()
    stop = threading.Event()
    waiter = threading.Thread(target=lambda: outage.wait_turn(stop) and released.set())
    waiter.start()
    wait_for(lambda: machine.checks >= 6, what="several checks")
    assert not released.is_set()
    machine.broken = False
    wait_for(released.is_set, what="the waiter to go on once the fault is gone")
    waiter.join()

    messages = [record.getMessage() for record in caplog.records]
    assert sum("images wait in the queue" in message for message in messages) == 1
    assert sum("resolved after" in message for message in messages) == 1
    assert machine.changes == ["data disk full", None]
    assert outage.problem is None


def test_a_stop_ends_the_wait() -> None:
    machine = Machine()
    outage = Outage(machine.check, machine.changes.append)
    outage.report(FULL)
    stop = threading.Event()
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(outage.wait_turn(stop)))
    waiter.start()
    wait_for(lambda: machine.checks >= 1, what="a check")
    stop.set()
    waiter.join(timeout=2)
    assert results == [False]
    assert not outage.pause(stop)


def test_another_fault_is_logged_as_a_change(caplog) -> None:
    caplog.set_level(logging.INFO, logger="htx.daemon")
    outage = Outage(lambda: None, lambda _problem: None)
    outage.report(FULL)
    outage.report(EnvironmentFault("database is locked", "database is locked"))
    assert outage.problem == "database is locked"
    assert sum("images wait in the queue" in record.getMessage() for record in caplog.records) == 2
