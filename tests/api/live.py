"""Real `htx` processes for the end-to-end tests: a temp config on a free port, logs kept."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(folder: Path, database_url: str = "", **api: Any) -> Path:
    """A config file like a user's: data under `folder` (and the database there, unless
    `database_url`), quick settling, no caption model."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"port": free_port(), "register_timeout_s": 5.0} | api
    lines = [
        "[paths]", 'data_dir = "data"',
        *(["[database]", f'url = "{database_url}"'] if database_url else []),
        "[watch]", "settle_ms = 200", "rescan_s = 0",
        "[pipeline]", "workers = 2",
        "[caption]", 'model = "none"',
        "[api]", *(f"{key} = {value!r}".replace("'", '"') for key, value in settings.items()),
    ]
    path = folder / "htx.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def port_of(config_file: Path) -> int:
    import tomllib

    return tomllib.loads(config_file.read_text())["api"]["port"]


class Htx:
    """`htx --config FILE COMMAND` as a child process; its output goes to a log file."""

    def __init__(self, config_file: Path, command: str) -> None:
        self.config_file = config_file
        self.command = command
        self.log_path = config_file.with_name(f"{command}.log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--config", str(config_file), command],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, as a shell gives a job: see interrupt()
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{port_of(self.config_file)}"

    def wait_healthy(self, *, daemon: bool = True) -> dict[str, Any]:
        def healthy() -> dict[str, Any] | None:
            assert self.process.poll() is None, f"htx {self.command} exited:\n{self.log()}"
            try:
                response = httpx.get(f"{self.base_url}/healthz", timeout=2)
            except httpx.HTTPError:
                return None
            body = response.json()
            ready = response.status_code == 200 and (not daemon or body["daemon"] == "running")
            return body if ready else None

        return wait_for(healthy, timeout=60, interval=0.1, what=f"htx {self.command} to be healthy")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C as a terminal sends it, to the whole process group; the exit status."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout)
        finally:
            self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
