"""`htx ingest`: copy files or folders into the inbox, and optionally follow them to the end.

Each file is copied under a hidden temporary name (ignored by the watcher) and renamed into
place, so the daemon only ever sees complete files. Its SHA-256 is computed on the way, which
is how `--wait` finds its record.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from tqdm import tqdm

from daemon.cli_common import path_problem
from daemon.database.records import utcnow
from daemon.inbox.watcher import IgnoreRules
from models import status_reads
from models.config import Config
from models.db import make_engine, missing_database
from models.files import CHUNK_BYTES
from models.tables import Image

POLL_S = 0.25


class IngestError(Exception):
    """A file or folder that could not be read or copied; the message says which, and why."""


def _refuse(error: OSError) -> None:
    """os.walk's onerror: a folder it may not list stops the ingest, rather than being skipped
    in silence (its files would be missing, and nothing would say so)."""
    raise error


@dataclass(frozen=True)
class Copied:
    source: Path
    inbox_path: Path
    sha256: str
    size_bytes: int


def collect(paths: list[Path], rules: IgnoreRules) -> list[tuple[Path, Path]]:
    """(file, name relative to the inbox) for every file named or inside a folder named."""
    found = []
    for path in paths:
        if path.is_dir():
            for folder, subfolders, names in os.walk(path, onerror=_refuse):
                subfolders[:] = sorted(name for name in subfolders if not rules.ignored_name(name))
                for name in sorted(names):
                    if not rules.ignored_name(name):
                        file = Path(folder, name)
                        found.append((file, Path(path.name) / file.relative_to(path)))
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found


def copy_into_inbox(source: Path, relative: Path, inbox: Path, progress: tqdm) -> Copied:
    destination = inbox / relative
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".htx-ingest-{uuid.uuid4().hex}.part")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(source, "rb") as reader, open(temporary, "wb") as writer:
            while chunk := reader.read(CHUNK_BYTES):
                writer.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                progress.update(len(chunk))
            writer.flush()
            os.fsync(writer.fileno())
        final = _free_name(destination)
        os.rename(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return Copied(source, final, digest.hexdigest(), size)


def _free_name(destination: Path) -> Path:
    candidate, number = destination, 1
    while candidate.exists():
        candidate = destination.with_name(f"{destination.stem} ({number}){destination.suffix}")
        number += 1
    return candidate


def ingest(paths: list[Path], config: Config, *, out: TextIO) -> list[Copied]:
    """Copy the files named, and those inside the folders named, into the inbox. Raises
    FileNotFoundError for a path that is not there, IngestError for one that cannot be read
    (or copied), saying how many files were copied before it."""
    copied: list[Copied] = []
    try:
        files = collect(paths, IgnoreRules(config.watch.ignore))
        total = sum(source.stat().st_size for source, _ in files)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"copying {len(files)} file(s)", file=out) as progress:
            for source, relative in files:
                copied.append(copy_into_inbox(source, relative, config.inbox_dir, progress))
    except FileNotFoundError:
        raise
    except OSError as error:
        before = f" ({len(copied)} file(s) copied into the inbox before it)" if copied else ""
        raise IngestError(f"{path_problem(error)}{before}") from None
    return copied


def _statuses(config: Config, hashes: set[str]) -> tuple[dict[str, tuple[str, str | None, str]], float | None]:
    """Status, error and filename by sha256 of the records found; heartbeat age in seconds."""
    if missing_database(config.database_url):
        return {}, None
    engine = make_engine(config.database_url, readonly=True)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Image.sha256, Image.status, Image.error, Image.filename).where(Image.sha256.in_(hashes))
            ).all()
            daemon = status_reads.daemon_status(connection)
    except DBAPIError:  # a server down, or no schema yet: nothing known, keep waiting
        return {}, None
    finally:
        engine.dispose()
    age = None if daemon is None else daemon.heartbeat_age_s(utcnow())
    return {row.sha256: (row.status, row.error, row.filename) for row in rows}, age


def wait_for_outcomes(
    copied: list[Copied], config: Config, *, timeout_s: float | None, out: TextIO
) -> tuple[dict[str, tuple[str, str | None, str]], bool]:
    """Follow the files to done or failed; (outcomes by sha256, whether all finished)."""
    hashes = {item.sha256 for item in copied}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    warned = False
    with tqdm(total=len(hashes), unit="image", desc="processing", file=out) as progress:
        while True:
            outcomes, heartbeat_age = _statuses(config, hashes)
            finished = {sha: outcome for sha, outcome in outcomes.items() if outcome[0] in ("done", "failed")}
            progress.update(len(finished) - progress.n)
            if len(finished) == len(hashes):
                return finished, True
            if not warned and (heartbeat_age is None or heartbeat_age > status_reads.HEARTBEAT_STALE_S):
                progress.write(
                    "the daemon does not seem to be running: the files wait in the inbox until it starts",
                    file=out,
                )
                warned = True
            if deadline is not None and time.monotonic() > deadline:
                return finished, False
            time.sleep(POLL_S)


def summary_lines(copied: list[Copied], outcomes: dict[str, tuple[str, str | None, str]]) -> Iterator[str]:
    counts = Counter(status for status, _error, _name in outcomes.values())
    unique = len({item.sha256 for item in copied})
    yield (
        f"{len(copied)} file(s) copied, {unique} distinct: "
        f"{counts['done']} done, {counts['failed']} failed, {unique - len(outcomes)} unfinished"
    )
    for status, error, filename in sorted(outcomes.values(), key=lambda outcome: outcome[2]):
        if status == "failed":
            yield f"  failed: {filename}: {error}"
