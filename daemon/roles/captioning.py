"""The captions role: the caption worker (daemon.captions.caption_worker), which loads the
model in the background and captions in batches, fed with the images this process's pipeline
workers hand over and those it claims from the queue (done images whose caption is to come:
from thumbnails-only workers, recaptions, claims given back). With caption.model = "none",
`CaptionsOff` ends those waits instead: the images are done without a caption here."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from PIL import Image

from daemon.captions.caption_worker import CaptionOutcome, CaptionWorker
from daemon.captions.captioner import Captioner
from daemon.captions.recaption import caption_input
from daemon.database import records, work_queue
from daemon.database.work_queue import CAPTION, Claim
from daemon.errors import EnvironmentFault, PipelineError
from daemon.roles.claims import CaptionTask, Claims, storing
from daemon.roles.outcomes import Outcomes
from daemon.roles.shared import Shared, spawn

log = logging.getLogger("htx.daemon")

# Images queued for a caption that a process with caption.model = "none" ends per claim.
CAPTIONS_OFF_BATCH = 50


class Captioning:
    def __init__(
        self, shared: Shared, claims: Claims, outcomes: Outcomes, captioner: Captioner, on_status: Callable[[], None]
    ) -> None:
        self.shared = shared
        self.claims = claims
        self.outcomes = outcomes
        self.captioner = captioner
        caption = shared.config.caption
        self.worker = CaptionWorker(
            captioner,
            batch_size=caption.batch_size,
            batch_wait_ms=caption.batch_wait_ms,
            finish=self.caption_done,
            hand_back=self.handed_back,
            on_status=lambda _status: on_status(),
            incoming=lambda: shared.in_flight.preparing,
        )

    @property
    def ready(self) -> bool:
        return self.worker.ready

    def start(self, threads: list[threading.Thread]) -> None:
        self.worker.start()  # loads the model in the background; images queue meanwhile
        spawn(threads, "htx-caption-feeder", self._feeder_loop)

    def stop(self) -> None:
        # Cuts the batch in hand short; it and the images still waiting go back to the queue.
        self.worker.stop()

    def submit(self, image: Image.Image, task: CaptionTask) -> None:
        """Queue one image for its caption; the worker finishes it or hands it back."""
        if not self.worker.submit(image, task):
            self.handed_back(task)  # stopping

    def _feeder_loop(self) -> None:
        """Claim images waiting for their caption and hand them to the caption worker, a batch
        at a time."""
        batch_size = self.shared.config.caption.batch_size
        while self.shared.wait_turn():
            if not self.worker.ready_for(batch_size):
                self.shared.stopping.wait(0.05)
                continue
            for claim in self.claims.take(CAPTION, batch_size):
                self._feed(claim)

    def _feed(self, claim: Claim) -> None:
        job = self.claims.start(claim)
        if job is None:
            return
        started = time.perf_counter()
        try:
            with storing(job.key or ""):
                image = caption_input(self.shared.config, job.source, job.size_bytes, self.captioner.input_size or 0)
        except PipelineError as error:
            self.outcomes.fail_safely(job, error, started)
            self.claims.release_job(job)
            return
        except EnvironmentFault as fault:
            self.shared.report(fault)
            self.claims.give_back(job)
            self.claims.release_job(job)
            return
        except Exception:
            self.outcomes.record_internal_error(job, started)
            self.claims.release_job(job)
            return
        self.submit(image, CaptionTask(job, None, started))

    def caption_done(self, task: CaptionTask, outcome: CaptionOutcome) -> None:
        """The caption worker's result for one image: commit it as done, move the original."""
        captioner = self.captioner
        values = records.caption_values(
            outcome.caption,
            error=outcome.error,
            caption_ms=outcome.caption_ms,
            model=captioner.model_name,
            device=captioner.device,
            runtime=captioner.runtime,
        )
        try:
            self.outcomes.finish(task.job, task.image_format, task.started, values)
        except EnvironmentFault as fault:
            self.shared.report(fault)
            self.claims.give_back(task.job)  # captioned again once the fault is gone
        except Exception:
            self.outcomes.record_internal_error(task.job, task.started)
        self.claims.release_job(task.job)

    def handed_back(self, task: CaptionTask) -> None:
        """Stopping before its caption: back to the queue, claimed again at the next start."""
        try:
            self.claims.release_claim(task.job.image_id, {})
        except Exception:
            log.exception("image %d %s: could not put it back in the queue", task.job.image_id, task.job.filename)
        finally:
            self.claims.release_job(task.job)


class CaptionsOff:
    """caption.model = "none" in a process with the captions role: images queued for a caption
    (by a start that had a model, a recaption) are done without one here."""

    def __init__(self, shared: Shared, claims: Claims) -> None:
        self.shared = shared
        self.claims = claims

    def start(self, threads: list[threading.Thread]) -> None:
        spawn(threads, "htx-captions-off", self._loop)

    def _loop(self) -> None:
        while self.shared.wait_turn():
            for claim in self.claims.take(CAPTION, CAPTIONS_OFF_BATCH):
                self._done_without_caption(claim)

    def _done_without_caption(self, claim: Claim) -> None:
        shared = self.shared
        shared.in_flight.begin()
        try:
            shared.writer.call_statement(
                work_queue.finish, shared.me.worker_id, claim.image.id, {"stage": None, "status": "done"} | shared.me.by_me()
            )
        except EnvironmentFault as fault:
            shared.report(fault)
            self.claims.release_claim(claim.image.id, {})
        finally:
            shared.claims.let_go(claim.image.id)
            shared.in_flight.end()
