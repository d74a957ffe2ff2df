"""Idle workers are woken by another process's NOTIFY, and a stop does not wait on the listener."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine

from daemon.database import work_queue
from daemon.database.work_signal import WorkSignal
from models.db import make_engine
from tests.helpers import wait_for
from tests.postgres import ThrowawayCluster


def _announce(engine: Engine) -> None:
    with engine.begin() as connection:
        work_queue.announce(connection)


def test_a_notify_from_another_process_wakes_a_waiting_worker(postgres_cluster: ThrowawayCluster) -> None:
    url = postgres_cluster.new_database()
    listening, announcing = make_engine(url), make_engine(url)
    signal = WorkSignal(listening, fallback_s=30)
    signal.start()
    try:
        signal.wait()  # the wake the listener gives once it listens: nothing was announced before
        woken = threading.Event()
        waiter = threading.Thread(target=lambda: (signal.wait(), woken.set()), daemon=True)
        waiter.start()
        assert not woken.wait(0.5)  # nothing announced: the worker sleeps on
        _announce(announcing)
        wait_for(woken.is_set, timeout=10, what="the NOTIFY to wake the worker (its fallback is 30 s)")
    finally:
        started = time.monotonic()
        signal.stop()
        stop_s = time.monotonic() - started
        listening.dispose()
        announcing.dispose()
    # A listener waiting on the server used to hold a stop for its whole 5 s wait.
    assert stop_s < 2, stop_s
