"""Whether the data disk can take more writes: both processes say so when it cannot."""

from __future__ import annotations

import os
from pathlib import Path

# Below this much free space a thumbnail or a database page may not fit: call the disk full
# before the writes themselves fail.
FULL_BELOW_BYTES = 1024 * 1024


def data_disk_problem(data_dir: Path) -> str | None:
    """"data disk full" when the folder's filesystem has (almost) no space or inodes left for
    this user, "data folder unavailable" when it cannot be looked at; None when all is well."""
    try:
        usage = os.statvfs(data_dir)
    except OSError:
        return "data folder unavailable"
    if usage.f_bavail * usage.f_frsize < FULL_BELOW_BYTES or (usage.f_files and usage.f_favail == 0):
        return "data disk full"
    return None
