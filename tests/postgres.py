"""A throwaway PostgreSQL cluster for the tests and benchmarks: initdb into a temp folder,
a server on a Unix socket in that folder (no TCP port), fsync off, removed when stopped.

initdb refuses to run as root, so as root the cluster belongs to the `postgres` user and
its server runs as that user (runuser); HTX connects as a role of its own, as a server's
guide has it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
ROLE = "htx"


class ClusterUnavailable(Exception):
    """No PostgreSQL server could be started here; the message says why."""


def server_binaries() -> Path | None:
    """The newest installed server's bin folder (Debian's layout), else the PATH's."""
    for folder in BIN_DIRS:
        if (folder / "initdb").is_file():
            return folder
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class ThrowawayCluster:
    """One server; `new_database()` gives each test a fresh database owned by ROLE."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="htx-pg-"))
        self._numbers = itertools.count(1)
        self._bin: Path | None = None
        self._owner: str | None = None

    @property
    def socket_dir(self) -> Path:
        return self.folder

    def start(self) -> "ThrowawayCluster":
        """Initialise and start the server; ClusterUnavailable (nothing left behind) if it cannot."""
        try:
            return self._start()
        except ClusterUnavailable:
            self.stop()
            raise

    def _start(self) -> "ThrowawayCluster":
        bin_dir = server_binaries()
        if bin_dir is None:
            raise ClusterUnavailable("no PostgreSQL server binaries (initdb) on this machine")
        self._bin = bin_dir
        if os.geteuid() == 0:
            self._owner = "postgres"
            shutil.chown(self.folder, user="postgres", group="postgres")
        self.folder.chmod(0o700)
        self._run("initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        self.resume()
        self.admin(f"CREATE ROLE {ROLE} LOGIN")
        return self

    @property
    def _data(self) -> Path:
        return self.folder / "data"

    def pause(self) -> None:
        """Stop the server, as an outage does (`immediate`: no goodbye to the clients)."""
        self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Restart the server as an administrator does (`fast`: clients' sessions are ended)."""
        self._run("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop")
        self.resume()

    def resume(self) -> None:
        """Start the server (again), on its Unix socket only."""
        # fsync off: nothing survives a power cut, and nothing needs to. Commits still reach
        # the WAL before they return (synchronous_commit stays on), so a server killed by
        # pause() keeps every transaction it acknowledged, as a real one does.
        options = (
            f"-k {self.folder} -c listen_addresses='' -c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self._data), "-o", options, "-l", str(self.folder / "server.log"), "-w", "start")

    def stop(self) -> None:
        if self._bin is not None and (self._data / "postmaster.pid").exists():
            self.pause()
        shutil.rmtree(self.folder, ignore_errors=True)

    def admin(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser through psql; its output, unaligned."""
        return self._run("psql", "-h", str(self.folder), "-U", "postgres", "-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql)

    def new_database(self, prefix: str = "htx") -> str:
        """A fresh empty database owned by ROLE; its SQLAlchemy URL."""
        name = f"{prefix}_{next(self._numbers)}"
        self.admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def url(self, database: str, user: str = ROLE) -> str:
        return f"postgresql+psycopg://{user}@/{database}?host={self.folder}"

    def _run(self, program: str, *args: str) -> str:
        assert self._bin is not None
        command = [str(self._bin / program), *args]
        if self._owner is not None:
            command = ["runuser", "-u", self._owner, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.folder)
        if result.returncode != 0:
            raise ClusterUnavailable(f"{program} failed: {(result.stderr or result.stdout).strip()[-500:]}")
        return result.stdout


def started_or_none(say: str = "postgresql skipped") -> ThrowawayCluster | None:
    """For the benchmarks: a started server, or None after printing why none could start."""
    try:
        return ThrowawayCluster().start()
    except ClusterUnavailable as error:
        print(f"{say}: {error}", flush=True)
        return None
