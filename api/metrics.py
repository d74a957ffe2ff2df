"""GET /metrics: HTX in the Prometheus text format, through the prometheus_client library.

Two sources. What the daemons do is in the database, so any API process can report it for
all of them, at the time of the scrape: images by status, the queue, processing and stage
durations of done images, each worker's heartbeat and what it holds, and the caption batches
each has run (written with its heartbeat). What the API does is counted in this process, by
`RequestMetrics`: requests by route, method and status, and their durations.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import context, reader
from models import metrics_reads, stats_reads
from models.caption_batches import SECONDS_BUCKETS, SIZE_BUCKETS, CaptionBatches
from models.embedding_reads import EmbeddingCounts

REQUEST_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The route label of a request no route matched: one series, whatever the paths asked for.
UNMATCHED = "unmatched"
# What a worker not stopped may be (models.status_reads.DaemonStatus.state); each has its series.
WORKER_STATES = ("running", "stale", "gone")
# The method label of any method HTX does not answer: the HTTP parser takes 32, and each junk
# one would otherwise be a series of its own (and grow every scrape's body).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


class RequestMetrics:
    """ASGI middleware counting requests by route template (never the raw path: ids would
    make a series each), method and status, and timing them. Pure ASGI, as api.hosts' check."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "htx_api_requests", "API requests answered", ["route", "method", "status"], registry=registry
        )
        self.durations = Histogram(
            "htx_api_request_duration_seconds",
            "Time from a request's arrival to its answer's start",
            ["route", "method"],
            buckets=REQUEST_BUCKETS_S,
            registry=registry,
        )
        # labels() parses its arguments at every call: the children, kept, cost a dict lookup.
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        async def send_and_note(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                self._observe(scope, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if not answered:  # the app raised before answering: the server sends a 500
                self._observe(scope, 500, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        name = getattr(route, "path", None) or UNMATCHED
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        key = (name, method, str(status))
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(*key)
        counter.inc()
        timer = self._timers.get(key[:2])
        if timer is None:
            timer = self._timers[key[:2]] = self.durations.labels(name, method)
        timer.observe(seconds)


class _Snapshot:
    """The database's figures as Prometheus metric families (a prometheus_client collector)."""

    def __init__(
        self, figures: metrics_reads.Metrics, now: datetime, lease_s: float, search: EmbeddingCounts | None = None
    ) -> None:
        self.figures = figures
        self.now = now
        self.lease_s = lease_s  # pipeline.lease_s: a worker silent longer is "gone"
        self.search = search  # None: search by meaning is off

    def collect(self) -> Iterator[Metric]:
        figures = self.figures
        images = GaugeMetricFamily("htx_images", "Images by status", labels=["status"])
        for status, count in figures.by_status.items():
            images.add_metric([status], count)
        yield images
        waiting = GaugeMetricFamily(
            "htx_queue_depth", "Pending images, by what they wait for (prepare: everything; caption: only that)",
            labels=["waiting_for"],
        )
        for stage, count in figures.waiting.items():
            waiting.add_metric([stage], count)
        yield waiting
        processing = figures.durations["processing"]
        total = HistogramMetricFamily("htx_image_processing_seconds", "Processing time of done images, first sight to record")
        total.add_metric([], _buckets(metrics_reads.DURATION_BUCKETS_S, processing.buckets, processing.count), processing.sum_s)
        yield total
        stages = HistogramMetricFamily("htx_image_stage_seconds", "Time of each stage, over done images", labels=["stage"])
        for stage in stats_reads.STAGES:
            timed = figures.durations[stage]
            stages.add_metric([stage], _buckets(metrics_reads.DURATION_BUCKETS_S, timed.buckets, timed.count), timed.sum_s)
        yield stages
        if self.search is not None:
            embeddings = GaugeMetricFamily(
                "htx_search_embeddings",
                "Captions by their embedding for search by meaning: embedded, or waiting (done, captioned, none yet)",
                labels=["state"],
            )
            embeddings.add_metric(["embedded"], self.search.embedded)
            embeddings.add_metric(["waiting"], self.search.waiting)
            yield embeddings
        yield from self._workers()

    def _workers(self) -> Iterator[Metric]:
        workers = self.figures.workers
        age = GaugeMetricFamily("htx_worker_heartbeat_age_seconds", "Seconds since each daemon last said it is alive", labels=["worker", "roles"])
        up = GaugeMetricFamily("htx_worker_up", "1 while a daemon's heartbeat is recent, else 0", labels=["worker"])
        states = GaugeMetricFamily(
            "htx_worker_state",
            "1 for each daemon's state: running, stale (two heartbeats missed), gone (none for a lease)",
            labels=["worker", "state"],
        )
        holding = GaugeMetricFamily("htx_worker_holding_images", "Images a daemon has claimed now", labels=["worker"])
        sizes = HistogramMetricFamily("htx_caption_batch_size", "Images per caption batch, since the daemon started", labels=["worker"])
        durations = HistogramMetricFamily("htx_caption_batch_seconds", "Model time per caption batch, since the daemon started", labels=["worker"])
        for worker in workers:
            age.add_metric([worker.name, worker.roles or ""], max(0.0, worker.status.heartbeat_age_s(self.now)))
            state = worker.status.state(self.now, self.lease_s)
            up.add_metric([worker.name], 1 if state == "running" else 0)
            for known in WORKER_STATES:
                states.add_metric([worker.name, known], 1 if state == known else 0)
            holding.add_metric([worker.name], worker.holding)
            batches = CaptionBatches.from_json(worker.caption_batches)
            if batches is not None:
                sizes.add_metric([worker.name], _buckets(SIZE_BUCKETS, _cumulative(batches.sizes), batches.batches), batches.images)
                durations.add_metric(
                    [worker.name], _buckets(SECONDS_BUCKETS, _cumulative(batches.durations), batches.batches), batches.seconds
                )
        yield from (age, up, states, holding, sizes, durations)


def _cumulative(counts: list[int]) -> list[int]:
    running, found = 0, []
    for count in counts:
        running += count
        found.append(running)
    return found


def _buckets(bounds: tuple[float, ...], cumulative: Any, count: int) -> list[tuple[str, float]]:
    # Bounds written as prometheus_client writes its own ("4.0", "0.005").
    return [*((floatToGoString(bound), value) for bound, value in zip(bounds, cumulative, strict=False)), ("+Inf", count)]


class _Both:
    """What generate_latest reads: this process's request metrics, then the database's."""

    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


async def get_metrics(request: Request) -> Response:
    """HTX's figures in the Prometheus text format.
    ---
    summary: Metrics for Prometheus
    tags: [service]
    responses:
      200:
        description: >-
          the Prometheus text format (text/plain): htx_images, htx_queue_depth, htx_image_processing_seconds,
          htx_image_stage_seconds, htx_search_embeddings (search by meaning on), htx_worker_*, htx_caption_batch_size / _seconds,
          htx_api_requests_total, htx_api_request_duration_seconds
      503:
        description: the database is not available
    """
    now = datetime.now(UTC).replace(tzinfo=None)
    figures = await reader(request).run_apart(metrics_reads.metrics, now=now)
    meaning = context(request).meaning
    search = await meaning.counts(reader(request)) if meaning is not None else None
    registry = request.app.state.metrics_registry
    lease_s = context(request).config.pipeline.lease_s
    body = generate_latest(_Both(registry, _Snapshot(figures, now, lease_s, search)))  # type: ignore[arg-type]
    return Response(body, media_type=CONTENT_TYPE_LATEST)
