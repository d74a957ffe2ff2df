"""Helpers shared by the tests: the acceptance corpus, waiting on conditions, reading records."""

from __future__ import annotations

import csv
import errno
import os
import pwd
import subprocess
import dataclasses
import io
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError

from models.config import Config
from models.db import make_engine, missing_database
from models.status_reads import schema_revision
from models.tables import DaemonState, Image

T = TypeVar("T")

CORPUS_DIR = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class CorpusFile:
    name: str
    true_format: str
    expected: str  # accept | reject-corrupt | reject-unsupported | reject-too-large

    @property
    def path(self) -> Path:
        return CORPUS_DIR / self.name

    @property
    def expected_status(self) -> str:
        return "done" if self.expected == "accept" else "failed"

    @property
    def expected_error_kind(self) -> str | None:
        return None if self.expected == "accept" else self.expected.removeprefix("reject-").replace("-", "_")


def corpus() -> list[CorpusFile]:
    with open(CORPUS_DIR / "MANIFEST.tsv", newline="", encoding="utf-8") as handle:
        return [
            CorpusFile(row["file"], row["true_format"], row["expected"])
            for row in csv.DictReader(handle, delimiter="\t")
        ]


def wait_for(predicate: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.02, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def read_images(config: Config) -> list[dict[str, Any]]:
    """Every image row, as dicts, read through a separate read-only connection ([] before the
    daemon has created the schema)."""
    if missing_database(config.database_url):
        return []
    engine = make_engine(config.database_url, readonly=True)
    try:
        with engine.connect() as connection:
            if schema_revision(connection) is None:
                return []
            return [dict(row._mapping) for row in connection.execute(select(Image.__table__).order_by(Image.id))]
    finally:
        engine.dispose()


def daemon_started(config: Config) -> bool:
    """True once a daemon has migrated the database and written its first heartbeat."""
    if missing_database(config.database_url):
        return False
    engine = make_engine(config.database_url, readonly=True)
    try:
        with engine.connect() as connection:
            if schema_revision(connection) is None:
                return False
            return connection.execute(select(DaemonState.__table__)).first() is not None
    except (OperationalError, ProgrammingError):  # migrated only part of the way yet
        return False
    finally:
        engine.dispose()


def finished(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Images with nothing left to do: failed, or done with no caption still to come."""
    return [row for row in rows if row["status"] in ("done", "failed") and row["stage"] is None]


def copy_in(source: Path, destination: Path) -> Path:
    """Copy into the inbox the way `cp` does: create, write, close."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    return destination


def rename_in(source: Path, destination: Path, staging: Path) -> Path:
    """Write outside the inbox, then rename in (one atomic event), as uploads and `mv` do."""
    staging.mkdir(parents=True, exist_ok=True)
    temporary = staging / destination.name
    shutil.copyfile(source, temporary)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary.rename(destination)
    return destination


def photo_bytes(number: int, size: tuple[int, int] = (1200, 900)) -> bytes:
    """A noisy JPEG, distinct for each number, that takes a realistic moment to process."""
    image = PILImage.effect_noise(size, 40 + number % 30).convert("RGB")
    image.paste((number * 2 % 256, 80, 255 - number * 2 % 256), (0, 0, 40 + number, 40))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_config_file(config: Config, path: Path, extra: str = "") -> Path:
    """A TOML file for a subprocess with the same data folder and caption settings as `config`."""
    caption = "".join(f"{key} = {json.dumps(value)}\n" for key, value in dataclasses.asdict(config.caption).items())
    database = f"[database]\nurl = {json.dumps(config.database.url)}\n" if config.database.url else ""
    path.write_text(
        f'[paths]\ndata_dir = "{config.data_dir}"\n' + database
        + "[watch]\nsettle_ms = 200\n[pipeline]\nworkers = 2\n[caption]\n" + caption + extra
    )
    return path


def htx_command(config_file: Path, *args: str) -> list[str]:
    """The `htx` command line, run with this interpreter."""
    return [sys.executable, "-m", "daemon.cli", "--config", str(config_file), *args]


def write_toml(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """A configuration file from {section: {key: value}} (strings, numbers, booleans, lists,
    and tables inside a section: {"storage": {"s3": {...}}} is [storage.s3])."""
    lines: list[str] = []

    def table(name: str, values: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items() if not isinstance(value, dict))
        for key, value in values.items():
            if isinstance(value, dict):
                table(f"{name}.{key}", value)

    for name, values in sections.items():
        table(name, values)
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def mounted_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at `mount_point`, to fill up (needs root: the test is skipped without)."""
    import pytest

    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


@contextmanager
def bind_mounted(source: Path, mount_point: Path) -> Iterator[Path]:
    """`source` bind-mounted at `mount_point` (as systemd's ReadWritePaths= or a container's
    volume does): the same filesystem, another mount (needs root: the test is skipped without)."""
    import pytest

    source.mkdir(parents=True, exist_ok=True)
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "--bind", str(source), str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount a folder (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(folder: Path) -> Path:
    """Write one file until the filesystem has no room left; returns it."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\xff" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
    finally:
        os.close(descriptor)
    return filler


PREPARING = "preparing the caption model for this CPU (first start, about 60 s): converting the image encoder"


class GatedCaptioner:
    """Loads only once `gate` is set, saying meanwhile that it prepares the model as a first
    start does; captions are "caption N" in order of arrival."""

    model_name = "gated"
    device = "cpu"
    runtime = "gated float32"
    input_size = 16
    settings = "cpu, gated"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.seen: list[tuple[int, int]] = []

    def load(self, progress: Callable[[str], None] | None = None) -> None:
        if progress is not None:
            progress(PREPARING)
        self.gate.wait()

    def caption(self, images: Sequence[PILImage.Image], *, cancel: threading.Event | None = None) -> list[str]:
        self.seen.extend(image.size for image in images)
        return [f"caption {len(self.seen) - len(images) + number}" for number in range(len(images))]


def as_user(name: str, check: Callable[[], object], expected: type[BaseException]) -> str:
    """What `check()` raises, of `expected` (its message; "no error" if nothing), in a child
    process that runs as the user `name`."""
    user = pwd.getpwnam(name)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: the interpreter is loaded already, only the user changes
        os.close(reader)
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            try:
                check()
                said = "no error"
            except expected as error:
                said = str(error)
            except BaseException as error:  # noqa: BLE001 - said to the parent, which fails on it
                said = f"unexpected {type(error).__name__}: {error}"
            os.write(writer, said.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answer:
        said = answer.read().decode()
    os.waitpid(child, 0)
    return said
