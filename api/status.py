"""`/api/ping`, `/api/stats` and `/healthz`: the service's own state. Each docstring's YAML,
after `---`, is its OpenAPI entry."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api import serialize
from api.context import ApiContext, CachedStats, Reader, context, reader
from api.faults import UNREACHABLE, problem_of
from api.serialize import JSON, JsonResponse
from models import stats_reads, status_reads
from models.diskspace import data_disk_problem

# Seconds a lapsed watch lease is given before /healthz says intake stopped (a renewal late).
INTAKE_GRACE_S = 5.0
# /api/stats reuses an answer this long at most while nothing is written (get_stats says why).
STATS_MAX_AGE_S = 1.0


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def ping(request: Request) -> Response:
    """A constant answer: the framework's own cost, the floor of every route's.
    ---
    summary: Constant answer (liveness, and the benchmark's floor)
    tags: [service]
    responses:
      200:
        description: '{"ok": true}'
    """
    return JsonResponse({"ok": True})


async def get_stats(request: Request) -> Response:
    """Processing statistics, computed by the database.
    ---
    summary: Processing statistics
    tags: [service]
    responses:
      200:
        description: >-
          {"total", "by_status", "finished", "success_rate", "failure_rate", "queue_depth",
          "processing_ms": {"average", "p50", "p95"} (done images), "stage_average_ms",
          "last_hour": {"processed", "per_minute"}, "caption": {"model", "device", "runtime"},
          "search": {"enabled", "model", "embedded" (images whose caption has an embedding by
          search.model), "waiting" (done images with a caption and none yet), "in_index" (in this
          API process's index)} or {"enabled": false, "reason"},
          "problem" (what keeps images from being processed, e.g. "data disk full"; null when all
          is well),
          "workers": [{"name" (host:pid), "roles", "state", "heartbeat_age_s", "holding" (images
          claimed now), "processed_last_hour", "per_minute", "problem"}]}; zeros for an empty
          database
      503:
        description: no database yet (the daemon has not run)
    """
    # Recomputed whenever the database has changed, and at least every second (the last hour
    # moves on by itself); otherwise the answer of a moment ago is still exact. Dashboards poll.
    # "Changed" is what status_reads.data_version says (SQLite's commit counter, PostgreSQL's
    # snapshot; None would mean: always afresh), read after the request came; concurrent
    # requests share that read (Reader.data_version). One request at a time computes; those
    # that come meanwhile with the same version take its answer.
    ctx = context(request)
    db = reader(request)
    version = await db.data_version()
    key = (db.generation, version)
    cached = ctx.stats
    if not _fresh(cached, key):
        async with db.stats_lock:
            cached = ctx.stats
            if not _fresh(cached, key):
                made_at = time.monotonic()
                now_utc = _utcnow()
                stats = await db.run(stats_reads.stats, now=now_utc)
                answer = serialize.stats(
                    stats, now_utc, captions_configured=ctx.config.caption.enabled, lease_s=ctx.config.pipeline.lease_s
                )
                answer["search"] = await _search_stats(ctx, db)
                cached = ctx.stats = CachedStats(key, made_at, answer, serialize.dumps(answer))
    assert cached is not None
    problem = cached.stats["problem"] or data_disk_problem(ctx.config.data_dir)
    if problem != cached.stats["problem"]:
        return JsonResponse(cached.stats | {"problem": problem})
    return Response(cached.body, media_type=JSON)


async def _search_stats(ctx: ApiContext, db: Reader) -> dict[str, Any]:
    """How far the embedding of captions has got, for search by meaning."""
    meaning = ctx.meaning
    if meaning is None:
        return {"enabled": False, "model": None, "reason": 'search.model is "none"'}
    counts = await meaning.counts(db)
    return {"enabled": True, "model": meaning.model, "embedded": counts.embedded, "waiting": counts.waiting, "in_index": len(meaning.index)}


def _fresh(cached: CachedStats | None, key: tuple[int, int | str | None]) -> bool:
    """Whether the cached answer still holds for a database at `key`."""
    return (
        cached is not None
        and key[1] is not None
        and cached.key == key
        and time.monotonic() - cached.made_at < STATS_MAX_AGE_S
    )


async def healthz(request: Request) -> Response:
    """Whether the database is reachable and current, and how recently the daemon checked in.
    ---
    summary: Health
    tags: [service]
    responses:
      200:
        description: >-
          {"status": "ok", "database": "ok", "schema": "current", "daemon": "running" | "stale" |
          "stopped" | "not started", "heartbeat_age_s", "daemon_pid", "problem": null}
      503:
        description: >-
          the database is unreachable, not created yet, or its schema is not current; or
          {"status": "degraded", "problem": "data disk full"}: images wait until the cause goes;
          an object store (storage.backend "s3") that does not answer is named too;
          a read that timed out on a lock or ran too long in the last 15 s is named as the problem;
          "intake stopped: ..." when the daemon that watches the inbox stopped renewing its watch
          lease (frozen, dead) over 5 s ago and no other took it over
    """
    ctx = context(request)
    try:
        now = _utcnow()
        revision, daemon, watch_lapsed_s = await reader(request).probe(status_reads.health, ctx.schema_head, now)
    except Exception as error:  # any failure to read is the answer here, not an error to log
        problem = problem_of(error)
        status = "unavailable" if problem in (None, UNREACHABLE) else "degraded"
        body = {"status": status, "database": "unavailable", "daemon": "unknown", "problem": problem}
        return JsonResponse(body, status_code=503)
    age = None if daemon is None else max(0.0, daemon.heartbeat_age_s(now))
    state = "not started" if daemon is None else daemon.state(now)
    body = {
        "status": "ok",
        "database": "ok",
        "schema": "current" if revision == ctx.schema_head else ("missing" if revision is None else "outdated"),
        "daemon": state,
        "heartbeat_age_s": None if age is None else round(age, 1),
        "daemon_pid": None if daemon is None else daemon.pid,
        # A read that timed out on a lock (another client's LOCK TABLE) is the problem too,
        # though this read, touching no table of images, did not meet it.
        "problem": ctx.faults.recent() or _problem(ctx, daemon) or await ctx.store_health.problem() or _intake_problem(watch_lapsed_s),
    }
    if body["schema"] != "current":
        body["status"] = "unavailable"
        return JsonResponse(body, status_code=503)
    if body["problem"] is not None:
        body["status"] = "degraded"
        return JsonResponse(body, status_code=503)
    return JsonResponse(body)


def _problem(ctx: ApiContext, daemon: status_reads.DaemonStatus | None) -> str | None:
    """What keeps images from being processed: what the daemon is waiting out, or a full data
    disk, which the API sees for itself (the daemon may not be able to write to say so)."""
    said = daemon.problem if daemon is not None and daemon.stopped_at is None else None
    return said or data_disk_problem(ctx.config.data_dir)


def _intake_problem(watch_lapsed_s: float | None) -> str | None:
    """Whether files stopped being registered: the watch lease lapsed (past a grace for a late
    renewal) and no standby took it, though a daemon held it (a frozen or dead watcher)."""
    if watch_lapsed_s is None or watch_lapsed_s < INTAKE_GRACE_S:
        return None
    return f"intake stopped: the daemon that watches the inbox stopped renewing its watch {watch_lapsed_s:.0f} s ago"
