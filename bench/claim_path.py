"""The path one image takes through the code (not a test, not a timing): which of the project's
modules a claim passes through, from the queue to its recorded outcome, in order.

Processes one real photo with `Daemon.process_now` (register, claim, stages, outcome, store)
under a profiler hook that notes every call from one of the project's modules (daemon/, models/,
api/) into another, and prints the modules in the order they were entered. "Entered again"
counts how often the path comes back into a module from elsewhere: a straight path enters each
module it needs a few times, a hub that every step returns to is entered again and again.

    .venv/bin/python bench/claim_path.py [--all]   (--all: list every step, not only the summary)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from pipeline import started_daemon_of_the_calling_thread  # noqa: E402

PHOTO = ROOT / "tests" / "corpus" / "flower.jpg"
# What is not the claim's path: the database writer's thread machinery, SQL building, logging.
NOT_THE_PATH = ("daemon/database/writer.py", "models/tables.py", "daemon/logs.py")


def _module_of(filename: str) -> str | None:
    try:
        relative = Path(filename).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return None
    if relative.split("/", 1)[0] not in ("daemon", "api", "models") or relative in NOT_THE_PATH:
        return None
    return relative


def trace_one_claim(workdir: Path) -> list[str]:
    # The calling thread's: the hook sees only this thread's calls.
    daemon = started_daemon_of_the_calling_thread(workdir / "data", workdir)
    config = daemon.config
    path: list[str] = []

    def note(frame, event, _arg):  # noqa: ANN001 - sys.setprofile's signature
        if event != "call":
            return
        module = _module_of(frame.f_code.co_filename)
        caller = frame.f_back
        # A call from one module into another: a function's calls within its module are not steps.
        if module is not None and (caller is None or _module_of(caller.f_code.co_filename) != module):
            path.append(module)

    try:
        target = config.inbox_dir / PHOTO.name
        os.link(PHOTO, target)
        sys.setprofile(note)
        try:
            image_id = daemon.process_now(target)
        finally:
            sys.setprofile(None)
        assert image_id is not None
    finally:
        daemon.stop()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="print every step of the path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="htx-claim-path-") as scratch:
        path = trace_one_claim(Path(scratch))
    entries = Counter(path)
    if args.all:
        for step, module in enumerate(path, 1):
            print(f"{step:4d}  {module}")
    print(f"one image, registered and claimed: {len(path)} calls between modules, through {len(entries)} modules")
    for module, count in entries.most_common(8):
        print(f"  entered {count:3d} time(s): {module}")


if __name__ == "__main__":
    main()
