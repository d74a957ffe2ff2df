from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from daemon.notify import SystemdNotifier


def _listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    return sock


def test_daemon_says_ready_then_pings_the_watchdog_then_stopping(tmp_path: Path) -> None:
    config_file = tmp_path / "htx.toml"
    config_file.write_text('[paths]\ndata_dir = "data"\n[caption]\nmodel = "none"\n')
    listener = _listen(tmp_path / "notify.sock")
    environment = os.environ | {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
    process = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "--config", str(config_file), "daemon"],
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        messages = [listener.recv(4096).decode()]
        assert messages[0].startswith("READY=1\nSTATUS=watching ")
        # The inbox is watched before READY: a file dropped now is not missed.
        assert (tmp_path / "data" / "inbox").is_dir()
        started = time.monotonic()
        while len(messages) < 4:
            messages.append(listener.recv(4096).decode())
        assert messages[1:] == ["WATCHDOG=1"] * 3
        # Pings come at half the watchdog interval (0.2 s), not at the 5 s heartbeat.
        assert time.monotonic() - started < 3
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=10)
    remaining = []
    listener.settimeout(1)
    try:
        while True:
            remaining.append(listener.recv(4096).decode())
    except TimeoutError:
        pass
    listener.close()
    assert process.returncode == 0, err
    assert remaining[-1] == "STOPPING=1"


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = SystemdNotifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready("x") is False


def test_abstract_socket_addresses_are_supported() -> None:
    name = f"htx-test-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind("\0" + name)
    listener.settimeout(5)
    try:
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier.watchdog()
        assert listener.recv(100) == b"WATCHDOG=1"
    finally:
        listener.close()


def test_watchdog_interval_is_ignored_when_meant_for_another_process() -> None:
    assert SystemdNotifier.from_environment({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert SystemdNotifier.from_environment({"WATCHDOG_USEC": "1000000"}).watchdog_interval_s == 1.0
