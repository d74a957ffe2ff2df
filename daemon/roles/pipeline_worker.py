"""The thumbnails role: a pipeline worker claims one pending image at a time, runs the stages
(daemon.stages.pipeline: decode, metadata, thumbnails) and records the outcome, or, when a
caption model is configured, records metadata and thumbnails and hands the image on for its
caption: to this process's caption worker when its model is ready, else to the queue (done, its
caption to come, the original in the store)."""

from __future__ import annotations

import logging
import time

from daemon.captions.captioner import Captioner
from daemon.database import records, work_queue
from daemon.database.work_queue import CAPTION, PREPARE, Claim
from daemon.errors import EnvironmentFault, PipelineError
from daemon.roles.captioning import Captioning
from daemon.roles.claims import CaptionTask, Claims, Job, storing
from daemon.roles.outcomes import Outcomes
from daemon.roles.shared import Shared
from daemon.stages.memory_budget import DecodeBudget, DecodeStopped
from daemon.stages.pipeline import prepare
from models.store import THUMBNAILS

log = logging.getLogger("htx.daemon")


class PipelineWorker:
    """What the pipeline workers of one process share: each runs `loop` on a thread of its own."""

    def __init__(
        self, shared: Shared, claims: Claims, outcomes: Outcomes, captioner: Captioner, captions: Captioning | None
    ) -> None:
        self.shared = shared
        self.claims = claims
        self.outcomes = outcomes
        self.captioner = captioner
        self.captions = captions
        # Decoded pixels held at once by all workers: large images wait their turn.
        self._budget = DecodeBudget(shared.config.pipeline.decode_memory_mb * 1024 * 1024, stop=shared.stopping)

    def loop(self) -> None:
        while self.shared.wait_turn():
            for claim in self.claims.take(PREPARE, 1):
                self.run_claim(claim)

    def run_claim(self, claim: Claim) -> None:
        """Process one claimed image, whatever happens: an outcome, or the claim given back."""
        job = self.claims.start(claim)
        if job is None:
            return
        started = time.perf_counter()
        taken_over = False
        try:
            taken_over = self._process(job, started)
        except EnvironmentFault as fault:
            self.shared.report(fault)
            self.claims.give_back(job)
        except DecodeStopped:  # stopping while it waited for decode memory: the next start takes it
            self.claims.give_back(job)
        except Exception:
            self.outcomes.record_internal_error(job, started)
        finally:
            if not taken_over:
                self.claims.release_job(job)

    def _process(self, job: Job, started: float) -> bool:
        """Run the stages; True if the caption worker has taken the image over (it finishes or
        hands back the image, and releases it). EnvironmentFault: nothing was recorded."""
        captions = self.captions
        caption_size = self.captioner.input_size
        try:
            with self.shared.in_flight.preparing_one(captions is not None and captions.ready), storing(THUMBNAILS):
                prepared = prepare(
                    job.source,
                    sha256=job.sha256,
                    size_bytes=job.size_bytes,
                    config=self.shared.config,
                    store=self.shared.store,
                    caption_size=caption_size,
                    budget=self._budget,
                )
        except PipelineError as error:
            self.outcomes.fail(job, error, started)
            return False
        values = records.prepared_values(prepared)
        if caption_size is None or prepared.caption_input is None:
            self.outcomes.finish(job, prepared.metadata.format, started, values | records.caption_values(None))
            return False
        if captions is None or not captions.ready:
            # No model here, or not yet (it loads, or compiles on a first start): the image is
            # done without waiting for it, and captioned from the store once a model is ready.
            self.hand_to_captions(job, prepared.metadata.format, started, values)
            return False
        # Metadata and thumbnails are visible now; the caption follows when the model gets to it.
        self.shared.writer.call(records.update_image, job.image_id, values)
        captions.submit(prepared.caption_input, CaptionTask(job, prepared.metadata.format, started))
        return True

    def hand_to_captions(self, job: Job, image_format: str, started: float, values: dict) -> None:
        """Metadata and thumbnails done, the caption left to the caption stage (a process with
        that role, or this one once its model is ready): the image is done, its caption to
        come; the original goes to the store, where the caption stage reads it."""
        outcome = {"status": "done", "stage": CAPTION, "error": None, "error_kind": None, "caption_error": None, "processed_at": records.utcnow()}
        processing_ms = self.outcomes.record_and_store(job, image_format, started, values | outcome)
        if processing_ms is not None:
            self.shared.writer.call(work_queue.announce)
            log.info("image %d %s: done in %.0f ms, its caption to come", job.image_id, job.filename, processing_ms)
