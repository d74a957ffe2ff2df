"""A fault of the environment injected at every step an image passes through, on both backends.

The fault starts the moment the image reaches the step (the step itself fails with it when it
writes what the fault breaks) and stands until the test clears it: a full data disk (files
cannot be written; SQLite, which lives there, cannot write either) or a database that cannot
be reached (every write fails). Whatever the step, once the fault is gone the image ends as
exactly one `done` record with its original and thumbnails stored, no row is left in
`processing`, no attempt is counted against it, and the daemon said so in a few lines.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from PIL import Image
from sqlalchemy.exc import OperationalError

from daemon import outage
from daemon.roles import captioning, outcomes, registrar, shared
from daemon.roles.captioning import Captioning
from daemon.roles.pipeline_worker import PipelineWorker
from daemon.database import work_queue
from daemon.database.writer import DatabaseWriter
from daemon.service import Daemon
from daemon.stages import pipeline
from models import store
from models.config import Config
from tests.helpers import CORPUS_DIR, copy_in, read_images, wait_for

pytestmark = pytest.mark.both_backends

DISK_FULL = "data disk full"
DATABASE_DOWN = "database unavailable"


class InstantCaptioner:
    """A model that is ready at once and captions in no time (the caption paths' faults are the
    daemon's, not the model's)."""

    model_name = "instant"
    device = "cpu"
    runtime = "instant float32"
    input_size = 16
    settings = "cpu, instant"

    def load(self, progress: object = None) -> None:
        pass

    def caption(self, images: Sequence[Image.Image], *, cancel: threading.Event | None = None) -> list[str]:
        return ["a photo"] * len(images)


class Fault:
    """One fault of the environment, switched on by the step it is injected at."""

    def __init__(self, problem: str, backend: str) -> None:
        self.problem = problem
        self.backend = backend
        self.on = False
        self.fired = threading.Event()

    @property
    def breaks_files(self) -> bool:
        return self.problem == DISK_FULL

    @property
    def breaks_database(self) -> bool:
        # A full data disk breaks SQLite, whose file is there; PostgreSQL has a disk of its own.
        return self.problem == DATABASE_DOWN or self.backend == "sqlite"

    def fire(self) -> None:
        if not self.fired.is_set():
            self.on = True
            self.fired.set()

    def file_error(self) -> OSError:
        return OSError(errno.ENOSPC, "No space left on device")

    def database_error(self) -> OperationalError:
        if self.problem == DISK_FULL:
            return OperationalError("INSERT ...", {}, Exception("database or disk is full"))
        return OperationalError("SELECT ...", {}, Exception("connection to server failed: Connection refused"))


def _install(monkeypatch: pytest.MonkeyPatch, fault: Fault, step: str) -> None:
    """What the fault breaks while it is on, and the step that switches it on."""
    real_write = DatabaseWriter._write

    def write(self: DatabaseWriter, *args: Any, **kwargs: Any) -> Any:
        if fault.on and fault.breaks_database:
            raise fault.database_error()
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(DatabaseWriter, "_write", write)

    def breaking_files(function: Callable[..., Any]) -> Callable[..., Any]:
        def broken(*args: Any, **kwargs: Any) -> Any:
            if fault.on and fault.breaks_files:
                raise fault.file_error()
            return function(*args, **kwargs)

        return broken

    monkeypatch.setattr(store, "move_file", breaking_files(store.move_file))
    monkeypatch.setattr(pipeline, "write_thumbnails", breaking_files(pipeline.write_thumbnails))
    monkeypatch.setattr(outcomes, "write_note", breaking_files(outcomes.write_note))
    real_disk_problem = shared.data_disk_problem
    monkeypatch.setattr(
        shared, "data_disk_problem", lambda folder: DISK_FULL if fault.on and fault.breaks_files else real_disk_problem(folder)
    )

    owner, name = STEPS[step]
    real_step = getattr(owner, name)

    def reached(*args: Any, **kwargs: Any) -> Any:
        fault.fire()
        if step in WRITES_OF_THE_DATABASE and fault.on and fault.breaks_database:
            raise fault.database_error()  # it runs inside the writer, past the check above
        return real_step(*args, **kwargs)

    monkeypatch.setattr(owner, name, reached)


# Each step, as the function an image passes through there. Faults that write fail inside it.
STEPS: dict[str, tuple[Any, str]] = {
    "hash": (registrar, "hash_file"),
    "decode": (pipeline, "open_image"),
    "thumbnails": (pipeline, "write_thumbnails"),
    "record": (work_queue, "finish"),
    "move": (store, "move_file"),
    "hand-over to captions": (PipelineWorker, "hand_to_captions"),
    "caption input": (captioning, "caption_input"),
    "caption record": (Captioning, "caption_done"),
}
WRITES_OF_THE_DATABASE = {"record"}
# Steps a separate captions-only daemon takes part in: the image is handed over through the queue.
HANDED_OVER = {"hand-over to captions", "caption input"}
CAPTIONED = HANDED_OVER | {"caption record"}
# The caption stage only reads the stored original, and PostgreSQL keeps its files on a disk of
# its own: a full data disk breaks nothing there, and the image is done regardless.
MEETS_NO_FAULT = {("caption input", DISK_FULL, "postgresql")}


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outage, "FIRST_PAUSE_S", 0.05)


@pytest.mark.parametrize("problem", [DISK_FULL, DATABASE_DOWN])
@pytest.mark.parametrize("step", list(STEPS))
def test_a_fault_at_any_step_is_waited_out_and_the_image_is_done_once(
    step: str,
    problem: str,
    backend: str,
    make_config: Callable[..., Config],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="htx")
    fault = Fault(problem, backend)
    captions = {"model": "instant"} if step in CAPTIONED else {}
    roles = ["watch", "thumbnails"] if step in HANDED_OVER else ["watch", "thumbnails", "captions"]
    config = make_config(caption=captions, pipeline={"workers": 1, "roles": roles, "lease_s": 3})
    captioner = InstantCaptioner() if captions else None
    _install(monkeypatch, fault, step)
    daemons = [Daemon(config, captioner=captioner)]
    if step in HANDED_OVER:
        captions_only = make_config(caption=captions, pipeline={"workers": 1, "roles": ["captions"], "lease_s": 3})
        daemons.append(Daemon(captions_only, captioner=InstantCaptioner()))
    for daemon in daemons:
        daemon.start()
    try:
        copy_in(CORPUS_DIR / "hopper.jpg", config.inbox_dir / "hopper.jpg")
        assert fault.fired.wait(20), f"the image never reached {step}"
        if (step, problem, backend) not in MEETS_NO_FAULT:
            wait_for(lambda: any(daemon.problem == problem for daemon in daemons), what=f"a daemon to wait out {problem!r}")
        fault.on = False
        wait_for(lambda: _done_once(config), timeout=30, what="the image to be done once the fault is gone")
        wait_for(lambda: all(daemon.problem is None for daemon in daemons), what="every daemon to say the fault is gone")
        assert all(daemon.wait_idle(timeout=20) for daemon in daemons)
    finally:
        fault.on = False
        for daemon in reversed(daemons):
            daemon.stop()

    (row,) = read_images(config)
    assert row["attempts"] == 0  # the outage was no failed attempt
    assert (config.data_dir / row["stored_path"]).is_file()
    assert (config.data_dir / row["thumb_small_path"]).is_file()
    assert (config.data_dir / row["thumb_medium_path"]).is_file()
    if captions:
        assert row["caption"] == "a photo"
    assert list(config.inbox_dir.iterdir()) == []
    said = caplog.text
    episodes = said.count("images wait in the queue")  # one line per daemon that met the fault
    assert (1 if (step, problem, backend) not in MEETS_NO_FAULT else 0) <= episodes <= len(daemons), said
    assert said.count("resolved after") == episodes, said
    assert "Traceback" not in said


def _done_once(config: Config) -> bool:
    rows = read_images(config)
    return len(rows) == 1 and rows[0]["status"] == "done" and rows[0]["stage"] is None and rows[0]["claimed_by"] is None
