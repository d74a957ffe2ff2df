"""An `htx daemon` as a child process, for the fleet tests (tests/daemon/test_fleet*.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.api.live import REPO


class Daemon:
    """One `htx daemon` process, its output in a log file of its own."""

    def __init__(self, config_file: Path, name: str) -> None:
        self.log_path = config_file.with_name(f"{name}.log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--config", str(config_file), "daemon"],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            self._log.close()
