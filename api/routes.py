"""The endpoints. Each docstring's YAML, after `---`, is its OpenAPI entry (/api/openapi.json).

Handlers parse and check the request, run queries from models.queries through the context's
reader, and shape the answer with api.serialize; errors are raised as ApiError subclasses.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import time
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from api import access, actions, metrics, serialize, uploads
from api.context import ApiContext, CachedStats, base_url, context, reader
from api.docs import docs_page
from api.errors import BadRequest, Conflict, NotFound
from api.faults import UNREACHABLE, problem_of
from api.params import etags, image_id_of, whole_number
from api.serialize import JsonResponse
from models import queries
from models.diskspace import data_disk_problem
from models.tables import STATUSES

# Seconds a lapsed watch lease is given before /healthz says intake stopped (a renewal late).
INTAKE_GRACE_S = 5.0

log = logging.getLogger("htx.api")

JSON = "application/json"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_SEARCH_CHARS = 200
STATS_MAX_AGE_S = 1.0
THUMBNAIL_CACHE_CONTROL = "public, max-age=31536000, immutable"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# -- parameters -------------------------------------------------------------------------------


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    limit = whole_number(raw, MAX_LIMIT)
    if not limit:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}.")
    return limit


def encode_cursor(before_id: int) -> str:
    """Opaque to clients, so the keyset behind it can change without breaking them."""
    return base64.urlsafe_b64encode(f"before:{before_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    prefix, _, number = text.partition(":")
    before_id = whole_number(number) if prefix == "before" else None
    if before_id is None:
        raise BadRequest("cursor is not valid: pass back the next_cursor of a previous page.")
    return before_id


def _status(request: Request) -> str | None:
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}.")
    return status


def _search(request: Request) -> str | None:
    """The search words; None for no search (no `q`, or only spaces)."""
    text = request.query_params.get("q")
    if text is None or not text.strip():
        return None
    if len(text) > MAX_SEARCH_CHARS:
        raise BadRequest(f"q must be at most {MAX_SEARCH_CHARS} characters.")
    return text


def _sha256(request: Request) -> str | None:
    sha256 = request.query_params.get("sha256")
    if sha256 is None:
        return None
    sha256 = sha256.strip().lower()
    if not _SHA256.fullmatch(sha256):
        raise BadRequest("sha256 must be 64 hexadecimal characters.")
    return sha256


def _wants_json(accept: str, content_type: str) -> bool:
    """Whether the Accept header prefers application/json to the image's own type."""
    json_q = image_q = 0.0
    major = content_type.split("/")[0]
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media == "application/json":
            json_q = max(json_q, q)
        elif media in (content_type, f"{major}/*", "*/*"):
            image_q = max(image_q, q)
    return json_q > 0 and json_q >= image_q


# -- endpoints ----------------------------------------------------------------------------------


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


async def list_images(request: Request) -> Response:
    """Newest first, keyset paginated; filtered by status, digest, or words.
    ---
    summary: List images, newest first
    tags: [images]
    parameters:
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 500, default: 50}}
      - {name: cursor, in: query, description: next_cursor of the previous page, schema: {type: string}}
      - {name: status, in: query, schema: {type: string, enum: [pending, processing, done, failed]}}
      - {name: sha256, in: query, description: the image with these bytes, schema: {type: string}}
      - name: q
        in: query
        description: >-
          words to find in file names and captions: each word, as the start of a word, must
          appear (case and accents ignored); at most 200 characters
        schema: {type: string, maxLength: 200}
    responses:
      200:
        description: >-
          {"items": [{"id", "image_id", "filename", "status", "received_at", "error", "caption",
          "caption_error", "thumbnails": {"small", "medium"}, "links"}], "next_cursor", "limit"}
      400:
        description: a parameter is not valid
      503:
        description: no database yet (the daemon has not run)
    """
    limit = _limit(request)
    cursor = request.query_params.get("cursor")
    page = await reader(request).run(
        queries.list_images,
        limit=limit,
        before_id=decode_cursor(cursor) if cursor else None,
        status=_status(request),
        sha256=_sha256(request),
        search=_search(request),
    )
    base = base_url(request)
    captions = context(request).config.caption.enabled
    return JsonResponse(
        {
            "items": [serialize.summary(row, base, captions=captions) for row in page.items],
            "next_cursor": encode_cursor(page.next_before_id) if page.next_before_id is not None else None,
            "limit": limit,
        }
    )


async def create_image(request: Request) -> Response:
    """Upload an image (multipart field `file`); the daemon processes it like any inbox file.
    ---
    summary: Upload a JPEG or PNG
    tags: [images]
    security: [{bearer: []}]
    requestBody:
      required: true
      content:
        multipart/form-data:
          schema:
            type: object
            required: [file]
            properties: {file: {type: string, format: binary}}
    responses:
      202:
        description: >-
          Accepted. Registered by the daemon: {"id", "image_id", "status", "filename", "sha256", "links"}; not
          registered within api.register_timeout_s: {"id": null, "image_id": null, "status": "queued", "sha256"},
          found later with GET /api/images?sha256=
      200:
        description: 'these bytes are already known: the existing record, with "duplicate": true'
      400:
        description: '{"error": "Only JPEG and PNG files are allowed."}, or no file field'
      401:
        description: api.upload_token is set and the request does not carry it
      413:
        description: the file is over api.max_upload_bytes
      415:
        description: the body is not multipart/form-data
    """
    ctx = context(request)
    config = ctx.config
    uploads.check_token(request, config)
    started = time.perf_counter()
    staged = await uploads.receive(request, config)
    received = time.perf_counter()
    db = reader(request)
    base = base_url(request)
    try:
        known = await uploads.find_known(db, staged.sha256)
        if known is not None:
            captions = config.caption.enabled
            return Response(serialize.record_json(known, base, captions=captions, duplicate=True), media_type=JSON)
        name = await run_in_threadpool(uploads.deliver, staged, config)
    finally:
        staged.discard()  # after delivery there is nothing left to discard
    delivered = time.perf_counter()
    row = await uploads.wait_registered(db, staged.sha256, config.api.register_timeout_s)
    log.info(
        "upload %s (%d bytes) -> inbox/%s: received in %.0f ms, synced in %.0f ms, %s after %.0f ms",
        staged.sha256[:12],
        staged.size_bytes,
        name,
        (received - started) * 1000,
        (delivered - received) * 1000,
        "registered" if row is not None else "not registered",
        (time.perf_counter() - delivered) * 1000,
    )
    if row is None:
        search = f"{base}/api/images?sha256={staged.sha256}"
        return JsonResponse(
            {"id": None, "image_id": None, "status": "queued", "filename": name, "sha256": staged.sha256, "links": {"search": search}},
            status_code=202,
        )
    url = serialize.image_url(base, row["id"])
    body = {
        "id": row["id"],
        "image_id": row["id"],
        "status": row["status"],
        "filename": row["filename"],
        "sha256": row["sha256"],
        "duplicate": False,
        "links": {"self": url},
    }
    return JsonResponse(body, status_code=202, headers={"Location": url})


async def get_image(request: Request) -> Response:
    """The whole record of one image.
    ---
    summary: One image's record
    tags: [images]
    parameters:
      - {name: image_id, in: path, required: true, schema: {type: integer}}
    responses:
      200:
        description: >-
          {"id", "image_id" (the same), "filename", "status", "error", "error_kind", "sha256", "received_at",
          "processed_at", "processing_ms", "timings_ms", "metadata", "caption", "caption_model",
          "caption_device", "caption_runtime", "caption_status", "caption_error", "thumbnails": {"small", "medium"},
          "links"}
      404:
        description: no image with this id
    """
    row = await reader(request).run(queries.image_by_id, image_id_of(request))
    if row is None:
        raise NotFound("No image with this id.")
    captions = context(request).config.caption.enabled
    return Response(serialize.record_json(row, base_url(request), captions=captions), media_type=JSON)


async def get_thumbnail(request: Request) -> Response:
    """The thumbnail file, or with `Accept: application/json` its link and size.
    ---
    summary: A thumbnail (small fits 150x150, medium 300x300)
    tags: [images]
    parameters:
      - {name: image_id, in: path, required: true, schema: {type: integer}}
      - {name: size, in: path, required: true, schema: {type: string, enum: [small, medium]}}
    responses:
      200:
        description: >-
          image/jpeg (image/png for images with transparency), with an ETag and a year-long
          immutable cache; or {"id", "size", "url", "width", "height"} for Accept: application/json
      304:
        description: If-None-Match matches
      400:
        description: '{"error": "Processing Failure"}: the image failed'
      404:
        description: no image with this id, no such size, or a done image without thumbnails
      409:
        description: not made yet (the image is still pending or processing)
    """
    image_id = image_id_of(request)
    size = request.path_params["size"]
    if size not in serialize.THUMBNAIL_SIZES:
        raise NotFound("No such thumbnail size: use small or medium.")
    row = await reader(request).run(queries.thumbnail_info, image_id)
    if row is None:
        raise NotFound("No image with this id.")
    if row["status"] == "failed":
        raise BadRequest("Processing Failure")
    relative = row[f"thumb_{size}_path"]
    if not relative and row["status"] == "done":
        raise NotFound("This image has no thumbnails.")
    if not relative:
        raise Conflict("The thumbnail is not made yet: try again shortly.", headers={"Retry-After": "1"})
    path = context(request).config.data_dir / relative
    content_type = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    headers = {"Vary": "Accept"}
    if _wants_json(request.headers.get("accept", ""), content_type):
        body = {
            "id": image_id,
            "size": size,
            "url": serialize.thumbnail_url(base_url(request), image_id, size),
            "width": row[f"thumb_{size}_width"],
            "height": row[f"thumb_{size}_height"],
            "content_type": content_type,
        }
        return JsonResponse(body, headers=headers)
    # Thumbnails are a few KiB and usually in the page cache: reading one here costs less
    # than a hop to a worker thread.
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            etag = f'"{row["sha256"][:16]}-{size}-{stat.st_size:x}-{stat.st_mtime_ns:x}"'
            headers |= {"ETag": etag, "Cache-Control": THUMBNAIL_CACHE_CONTROL}
            if etag in etags(request.headers.get("if-none-match", "")) or request.headers.get("if-none-match") == "*":
                return Response(status_code=304, headers=headers)
            content = handle.read()
    except FileNotFoundError:
        log.warning("image %d: thumbnail %s is missing from the data folder", image_id, size)
        raise NotFound("The thumbnail file is missing.") from None
    return Response(content, media_type=content_type, headers=headers)


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
    # "Changed" is what queries.data_version says (SQLite's commit counter, PostgreSQL's
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
                stats = await db.run(queries.stats, now=now_utc)
                answer = serialize.stats(
                    stats, now_utc, captions_configured=ctx.config.caption.enabled, lease_s=ctx.config.pipeline.lease_s
                )
                cached = ctx.stats = CachedStats(key, made_at, answer, serialize.dumps(answer))
    assert cached is not None
    problem = cached.stats["problem"] or data_disk_problem(ctx.config.data_dir)
    if problem != cached.stats["problem"]:
        return JsonResponse(cached.stats | {"problem": problem})
    return Response(cached.body, media_type=JSON)


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
          a read that timed out on a lock or ran too long in the last 15 s is named as the problem;
          "intake stopped: ..." when the daemon that watches the inbox stopped renewing its watch
          lease (frozen, dead) over 5 s ago and no other took it over
    """
    ctx = context(request)
    try:
        now = _utcnow()
        revision, daemon, watch_lapsed_s = await reader(request).probe(queries.health, ctx.schema_head, now)
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
        "problem": ctx.faults.recent() or _problem(ctx, daemon) or _intake_problem(watch_lapsed_s),
    }
    if body["schema"] != "current":
        body["status"] = "unavailable"
        return JsonResponse(body, status_code=503)
    if body["problem"] is not None:
        body["status"] = "degraded"
        return JsonResponse(body, status_code=503)
    return JsonResponse(body)


def _problem(ctx: ApiContext, daemon: queries.DaemonStatus | None) -> str | None:
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


async def openapi(request: Request) -> Response:
    """This API's OpenAPI description.
    ---
    summary: OpenAPI schema
    tags: [service]
    responses:
      200:
        description: OpenAPI 3 document (JSON)
    """
    return JsonResponse(context(request).openapi)


async def docs(request: Request) -> Response:
    """A page listing every endpoint, made from the OpenAPI schema (no script, no CDN).
    ---
    summary: API documentation page
    tags: [service]
    responses:
      200:
        description: text/html
    """
    return HTMLResponse(docs_page(context(request).openapi))


class Images(HTTPEndpoint):
    """One route for both methods, so a 405 names both in its Allow header."""

    get = staticmethod(list_images)
    post = staticmethod(create_image)


class OneImage(HTTPEndpoint):
    get = staticmethod(get_image)
    delete = staticmethod(actions.delete_image)


ROUTES = [
    Route("/api/ping", ping, methods=["GET"]),
    Route("/api/images", Images),
    Route("/api/images/{image_id}", OneImage),
    Route("/api/images/{image_id}/original", actions.get_original, methods=["GET"]),
    Route("/api/images/{image_id}/reprocess", actions.reprocess_image, methods=["POST"]),
    Route("/api/images/{image_id}/recaption", actions.recaption_image, methods=["POST"]),
    Route("/api/images/{image_id}/thumbnails/{size}", get_thumbnail, methods=["GET"]),
    Route("/api/stats", get_stats, methods=["GET"]),
    Route("/api/openapi.json", openapi, methods=["GET"]),
    Route("/api/docs", docs, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics.get_metrics, methods=["GET"]),
    Route("/api/session", access.sign_in, methods=["POST"]),
]
