"""CaptionWorker: background loading, batching, one outcome per image, a clean stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest
from PIL import Image

from daemon.captions.caption_worker import CaptionOutcome, CaptionWorker
from daemon.captions.errors import CaptionCancelled, CaptionerUnavailable
from tests.helpers import wait_for


class ScriptedCaptioner:
    """A captioner whose loading waits for `loaded` and whose batches are recorded."""

    model_name = "scripted"
    device = "cpu"
    runtime = "scripted float32"
    input_size = 8
    settings = "cpu, scripted"

    def __init__(
        self, *, load_error: Exception | None = None, failing_calls: Sequence[int] = (), stuck: bool = False
    ) -> None:
        self.loaded = threading.Event()
        self.stuck = stuck  # each model call runs until cancelled
        self.in_call = threading.Event()
        self.load_error = load_error
        self.failing_calls = set(failing_calls)
        self.batches: list[list[str]] = []

    def load(self, progress: object = None) -> None:
        self.loaded.wait()
        if self.load_error is not None:
            raise self.load_error

    def caption(self, images: Sequence[Image.Image], *, cancel: threading.Event | None = None) -> list[str]:
        names = [image.info["name"] for image in images]
        self.batches.append(names)
        if len(self.batches) in self.failing_calls:
            raise RuntimeError("out of memory")
        if self.stuck and cancel is not None:
            self.in_call.set()
            assert cancel.wait(timeout=10), "never cancelled"
            raise CaptionCancelled()
        return [f"caption of {name}" for name in names]


def image(name: str) -> Image.Image:
    picture = Image.new("RGB", (8, 8))
    picture.info["name"] = name
    return picture


class Recorder:
    def __init__(self) -> None:
        self.finished: dict[str, CaptionOutcome] = {}
        self.handed_back: list[str] = []
        self.statuses: list[str] = []
        self._lock = threading.Lock()

    def finish(self, payload: str, outcome: CaptionOutcome) -> None:
        with self._lock:
            assert payload not in self.finished
            self.finished[payload] = outcome

    def hand_back(self, payload: str) -> None:
        self.handed_back.append(payload)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_worker(
    captioner: ScriptedCaptioner,
    recorder: Recorder,
    *,
    batch_size: int = 3,
    batch_wait_ms: int = 0,
    incoming: Callable[[], int] = lambda: 0,
) -> CaptionWorker:
    worker = CaptionWorker(
        captioner,
        batch_size=batch_size,
        batch_wait_ms=batch_wait_ms,
        finish=recorder.finish,
        hand_back=recorder.hand_back,
        on_status=recorder.statuses.append,
        incoming=incoming,
    )
    worker.start()
    return worker


def test_images_wait_while_the_model_loads_then_go_in_batches(recorder: Recorder) -> None:
    captioner = ScriptedCaptioner()
    worker = make_worker(captioner, recorder, batch_size=3)
    names = [f"img{number}" for number in range(7)]
    for name in names:
        assert worker.submit(image(name), name)
    assert worker.status == "loading" and captioner.batches == []

    captioner.loaded.set()
    wait_for(lambda: len(recorder.finished) == 7, what="every image to be captioned")
    worker.stop()

    assert captioner.batches == [names[0:3], names[3:6], names[6:7]]
    assert {name: outcome.caption for name, outcome in recorder.finished.items()} == {
        name: f"caption of {name}" for name in names
    }
    assert all(outcome.error is None and outcome.caption_ms is not None for outcome in recorder.finished.values())
    assert recorder.statuses == ["ready (cpu, scripted)"]
    assert recorder.handed_back == []


def test_a_lone_image_is_captioned_at_once_alone_when_no_other_is_coming(recorder: Recorder) -> None:
    captioner = ScriptedCaptioner()
    captioner.loaded.set()
    worker = make_worker(captioner, recorder, batch_size=4, batch_wait_ms=60_000)
    wait_for(lambda: worker.status.startswith("ready"), what="the model to load")

    worker.submit(image("lone"), "lone")
    # Far sooner than batch_wait_ms: nothing else was on its way, so nothing was waited for.
    wait_for(lambda: "lone" in recorder.finished, timeout=5, what="the lone image captioned")
    worker.stop()

    assert captioner.batches == [["lone"]]  # a batch of 1, not of batch_size


def test_a_batch_waits_for_images_the_pipeline_is_preparing(recorder: Recorder) -> None:
    captioner = ScriptedCaptioner()
    captioner.loaded.set()
    preparing = [1]  # one more image is on its way
    worker = make_worker(captioner, recorder, batch_size=4, batch_wait_ms=60_000, incoming=lambda: preparing[0])
    wait_for(lambda: worker.status.startswith("ready"), what="the model to load")

    worker.submit(image("first"), "first")
    assert not worker_ran(captioner, within_s=0.3), "the first image should wait for the one being prepared"
    preparing[0] = 0
    worker.submit(image("second"), "second")
    wait_for(lambda: len(recorder.finished) == 2, timeout=5, what="the batch to run")
    worker.stop()

    assert captioner.batches == [["first", "second"]]


def worker_ran(captioner: ScriptedCaptioner, *, within_s: float) -> bool:
    """Whether the model was called within `within_s` (a bounded wait for something that must not happen)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if captioner.batches:
            return True
        time.sleep(0.01)
    return bool(captioner.batches)


def test_a_model_that_cannot_load_gives_every_image_the_reason(recorder: Recorder) -> None:
    captioner = ScriptedCaptioner(load_error=CaptionerUnavailable("long log line /srv/x", reason="model x not available"))
    captioner.loaded.set()
    worker = make_worker(captioner, recorder)
    for name in ("a", "b"):
        worker.submit(image(name), name)
    wait_for(lambda: len(recorder.finished) == 2, what="both images to finish")
    worker.submit(image("later"), "later")
    wait_for(lambda: len(recorder.finished) == 3, what="a later image to finish")
    worker.stop()

    assert worker.status == "unavailable: model x not available"
    assert {outcome for outcome in recorder.finished.values()} == {CaptionOutcome(None, "model x not available", None)}
    assert captioner.batches == []


def test_an_unexpected_load_error_is_unavailable_too(recorder: Recorder) -> None:
    captioner = ScriptedCaptioner(load_error=ImportError("no module named torch"))
    captioner.loaded.set()
    worker = make_worker(captioner, recorder)
    worker.submit(image("a"), "a")
    wait_for(lambda: "a" in recorder.finished, what="the image to finish")
    worker.stop()
    assert recorder.finished["a"].caption is None
    assert "ImportError" in recorder.finished["a"].error


def test_a_failing_batch_fails_only_its_own_captions(recorder: Recorder) -> None:
    captioner = ScriptedCaptioner(failing_calls=[1])
    worker = make_worker(captioner, recorder, batch_size=2)
    for name in ("a", "b", "c", "d"):
        worker.submit(image(name), name)
    captioner.loaded.set()
    wait_for(lambda: len(recorder.finished) == 4, what="every image to finish")
    worker.stop()

    assert [recorder.finished[name].caption for name in "abcd"] == [None, None, "caption of c", "caption of d"]
    assert "RuntimeError" in recorder.finished["a"].error
    assert recorder.finished["c"].error is None


def test_stopping_while_loading_hands_back_every_waiting_image(recorder: Recorder) -> None:
    captioner = ScriptedCaptioner()
    worker = make_worker(captioner, recorder)
    for name in ("a", "b"):
        worker.submit(image(name), name)

    worker.stop()  # does not wait for the load

    assert recorder.handed_back == ["a", "b"]
    assert not worker.submit(image("late"), "late")
    captioner.loaded.set()  # the load ends after the stop: nothing else happens
    worker._thread.join(timeout=5)
    assert not worker._thread.is_alive()
    assert recorder.finished == {} and recorder.statuses == []


def test_stopping_mid_batch_cancels_the_model_call_and_hands_the_batch_back(recorder: Recorder) -> None:
    captioner = ScriptedCaptioner(stuck=True)
    captioner.loaded.set()
    worker = make_worker(captioner, recorder, batch_size=2)
    for name in ("a", "b", "c"):
        worker.submit(image(name), name)
    assert captioner.in_call.wait(timeout=5)

    worker.stop()

    assert not worker._thread.is_alive()
    assert sorted(recorder.handed_back) == ["a", "b", "c"]  # the cut batch and the one waiting
    assert recorder.finished == {}


def test_a_full_queue_blocks_the_submitter_until_stop(recorder: Recorder) -> None:
    captioner = ScriptedCaptioner()
    worker = make_worker(captioner, recorder, batch_size=1)
    for number in range(worker.capacity):
        assert worker.submit(image(str(number)), str(number))
    results: list[bool] = []
    blocked = threading.Thread(target=lambda: results.append(worker.submit(image("extra"), "extra")))
    blocked.start()
    blocked.join(timeout=0.3)
    assert blocked.is_alive()  # waiting for room

    worker.stop()
    blocked.join(timeout=5)

    assert results == [False]
    assert len(recorder.handed_back) == worker.capacity
