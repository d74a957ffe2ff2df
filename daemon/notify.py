"""systemd's notify protocol: a datagram to $NOTIFY_SOCKET ("READY=1", "WATCHDOG=1", ...).

A few lines instead of a dependency. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        # A leading "@" names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_interval_s = watchdog_usec / 1_000_000 if watchdog_usec else None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> SystemdNotifier:
        """Read NOTIFY_SOCKET and WATCHDOG_USEC (honoured only when WATCHDOG_PID is ours or unset)."""
        watchdog_usec = None
        if environ.get("WATCHDOG_USEC", "").isdigit():
            pid = environ.get("WATCHDOG_PID", "")
            if not pid or pid == str(os.getpid()):
                watchdog_usec = int(environ["WATCHDOG_USEC"])
        return cls(environ.get("NOTIFY_SOCKET") or None, watchdog_usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; False (and a debug line) if it could not."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(fields).encode())
        except OSError as error:
            log.debug("could not notify systemd: %s", error)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")
