"""`htx run`: the daemon and the API as two child processes, started and stopped together.

Two processes rather than threads: the daemon's image work and the API's event loop never
compete for one interpreter, and each is exactly what systemd would run on a server.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("htx.run")

POLL_S = 0.2


def child_commands(config_file: Path | None) -> dict[str, list[str]]:
    """`htx daemon` and `htx api` with the same configuration file as this process."""
    base = [sys.executable, "-m", "daemon.cli"]
    if config_file is not None:
        base += ["--config", str(config_file)]
    # The daemon first: it creates and migrates the database the API reads.
    return {"daemon": [*base, "daemon"], "api": [*base, "api"]}


PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with_parent() -> None:
    """In the child, before it runs: SIGTERM when this process dies, even by SIGKILL (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_together(commands: dict[str, Sequence[str]]) -> int:
    """Start every command; on SIGINT, SIGTERM or SIGHUP stop them all and wait; 0 if all
    stopped cleanly.

    Each child runs in a process group of its own, so a Ctrl-C in the terminal reaches this
    process only, and each child is told to stop exactly once, by this process's SIGTERM:
    the terminal's SIGINT and then a SIGTERM made the daemon die of the second signal when it
    came after the daemon had finished handling the first (exit status -15).

    If one exits on its own, the others are stopped too and the result is 1: half of HTX
    running looks alive but is not.
    """
    signals: list[int] = []

    def _on_signal(signum: int, _frame: object) -> None:
        signals.append(signum)

    previous = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    children: dict[str, subprocess.Popen] = {}
    try:
        for name, command in commands.items():
            children[name] = subprocess.Popen(
                list(command), stdin=subprocess.DEVNULL, process_group=0, preexec_fn=_die_with_parent
            )
            log.info("started %s (pid %d)", name, children[name].pid)
        died = None
        while not signals and died is None:
            died = next((name for name, child in children.items() if child.poll() is not None), None)
            time.sleep(POLL_S)
        if died is not None:
            log.error("%s exited with status %s: stopping the rest", died, children[died].returncode)
        else:
            log.info("%s received: stopping %s", signal.Signals(signals[0]).name, ", ".join(children))
        _stop(children, signals)
    finally:
        for child in children.values():  # only after an error of our own: never leave orphans
            if child.poll() is None:
                child.kill()
                child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if died is not None:
        return 1
    return 0 if all(child.returncode == 0 for child in children.values()) else 1


def _stop(children: dict[str, subprocess.Popen], signals: list[int]) -> None:
    """SIGTERM to each child, then wait; a second Ctrl-C or SIGTERM while waiting kills them."""
    handled = len(signals)
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    while any(child.poll() is None for child in children.values()):
        if len(signals) > handled:
            log.warning("stopping now: killing %s", ", ".join(name for name, c in children.items() if c.poll() is None))
            for child in children.values():
                if child.poll() is None:
                    child.kill()
        time.sleep(POLL_S / 4)
    for name, child in children.items():
        log.info("%s stopped (exit status %s)", name, child.returncode)
