"""models.status_reads: what a worker's heartbeat says of it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from models.status_reads import HEARTBEAT_STALE_S, DaemonStatus

NOW = datetime(2026, 1, 1, 12, 0, 0)


def _heard(seconds_ago: float, stopped: bool = False) -> DaemonStatus:
    at = NOW - timedelta(seconds=seconds_ago)
    return DaemonStatus(1, at, at, None, None, None, None, stopped_at=at if stopped else None)


@pytest.mark.parametrize(
    ("seconds_ago", "state"),
    [(0, "running"), (HEARTBEAT_STALE_S, "running"), (HEARTBEAT_STALE_S + 0.5, "stale"), (60, "stale"), (60.5, "gone")],
)
def test_a_worker_is_stale_past_two_heartbeats_and_gone_after_the_lease(seconds_ago: float, state: str) -> None:
    assert HEARTBEAT_STALE_S == 10  # two of daemon.service.HEARTBEAT_S
    assert _heard(seconds_ago).state(NOW, lease_s=60) == state


def test_without_a_lease_nothing_is_gone_and_a_clean_stop_is_stopped() -> None:
    assert _heard(3600).state(NOW) == "stale"
    assert _heard(3600, stopped=True).state(NOW, lease_s=60) == "stopped"
