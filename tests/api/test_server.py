"""`htx api`'s start: what it says when it cannot listen."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from api.server import listen_problem, serve
from tests.api.conftest import config_for


def test_a_busy_port_names_the_key_to_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", 0))
        other_program.listen()
        port = other_program.getsockname()[1]
        config = config_for(tmp_path, api={"port": port})

        assert serve(config) is False

    [error] = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert f"port {port} of 127.0.0.1 is in use by another program" in error
    assert "set api.port to a free port" in error


def test_a_free_port_and_an_unknown_host(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert listen_problem("127.0.0.1", port) is None
    assert "set api.host" in (listen_problem("no-such-host.invalid", port) or "")
    assert "set api.host" in (listen_problem("192.0.2.1", port) or "")  # TEST-NET-1: never local
