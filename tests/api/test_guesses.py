"""api.guesses: wrong tokens cost a client more and more time, and are logged once a burst."""

from __future__ import annotations

import logging

import pytest

from api import guesses as guesses_module
from api.guesses import FREE_FAILURES, HALF_LIFE_S, MAX_HOLD_S, FailedGuesses


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_few_wrong_tokens_are_free_then_each_holds_the_client_back_twice_as_long() -> None:
    clock = Clock()
    guesses = FailedGuesses(clock=clock)
    for _ in range(FREE_FAILURES):
        guesses.failed("192.0.2.1")
        assert guesses.retry_after("192.0.2.1") == 0
    holds = []
    for _ in range(10):
        guesses.failed("192.0.2.1")
        holds.append(guesses.retry_after("192.0.2.1"))
        clock.now += holds[-1]  # a client that waits as told
    assert holds[:4] == pytest.approx([0.5, 1, 2, 4], rel=0.05)
    assert holds[-1] == MAX_HOLD_S and holds == sorted(holds)
    assert guesses.retry_after("198.51.100.7") == 0  # another client is not held back


def test_a_client_that_stops_guessing_is_free_again() -> None:
    clock = Clock()
    guesses = FailedGuesses(clock=clock)
    for _ in range(FREE_FAILURES + 3):
        guesses.failed("192.0.2.1")
    assert guesses.retry_after("192.0.2.1") > 0
    clock.now += 6 * HALF_LIFE_S
    assert guesses.retry_after("192.0.2.1") == 0
    guesses.failed("192.0.2.1")  # the count has decayed: this one is free again
    assert guesses.retry_after("192.0.2.1") == 0


def test_one_warning_a_burst_not_one_a_guess(caplog) -> None:
    clock = Clock()
    guesses = FailedGuesses(clock=clock)
    with caplog.at_level(logging.WARNING, logger="htx.api.access"):
        for _ in range(50):
            guesses.failed("192.0.2.1")
            clock.now += 0.1
        assert [record.getMessage() for record in caplog.records] == [
            f"{FREE_FAILURES + 1} wrong tokens from 192.0.2.1 in a short time: its tokens are answered 429, "
            "for longer each time, while it goes on"
        ]
        clock.now += 10 * HALF_LIFE_S  # quiet: the next burst is another
        for _ in range(FREE_FAILURES + 2):
            guesses.failed("192.0.2.1")
    assert len(caplog.records) == 2 and all(record.levelno == logging.WARNING for record in caplog.records)


def test_the_table_is_bounded_dropping_the_oldest(monkeypatch) -> None:
    guesses = FailedGuesses(clock=Clock(), max_clients=100)
    for _ in range(FREE_FAILURES + 1):
        guesses.failed("192.0.2.1")
    for number in range(99):
        guesses.failed(f"10.0.{number // 256}.{number % 256}")
    assert len(guesses) == 100 and guesses.retry_after("192.0.2.1") > 0
    for number in range(99, 1000):
        guesses.failed(f"10.0.{number // 256}.{number % 256}")
    assert len(guesses) == 100
    assert guesses.retry_after("192.0.2.1") == 0  # the oldest went first
    assert guesses_module.MAX_CLIENTS <= 10_000
