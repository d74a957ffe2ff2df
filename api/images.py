"""`/api/images` and `/api/images/{image_id}`: the list, with its filters and keyset pages;
uploads; one image's record. Each docstring's YAML, after `---`, is its OpenAPI entry."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api import serialize, uploads
from api.context import base_url, context, reader
from api.errors import BadRequest, NotFound, ServiceUnavailable
from api.params import image_id_of, whole_number
from api.serialize import JSON, JsonResponse
from models import image_reads
from models.tables import STATUSES

log = logging.getLogger("htx.api")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_SEARCH_CHARS = 200
_SHA256 = re.compile(r"[0-9a-f]{64}")


# -- parameters -------------------------------------------------------------------------------


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    limit = whole_number(raw, MAX_LIMIT)
    if not limit:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}.")
    return limit


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: below this id, and by order=taken below this sort key; for
    a search by meaning (order "meaning" or "auto"), after this score (`key`), then this id."""

    order: str
    before_id: int
    key: str | None = None

    @property
    def below(self) -> tuple[float, int]:
        return (float(self.key or 0), self.before_id)


# A sort key as models.tables.sort_key writes it ("" is the column's default, for a row
# written by hand).
_SORT_KEY = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})?")


_SCORE = re.compile(r"-?[0-9]+(\.[0-9]+)?(e-?[0-9]+)?")
MATCHES = ("words", "meaning", "auto")


def encode_cursor(before_id: int, key: str | None = None, order: str = "taken") -> str:
    """Opaque to clients, so the keyset behind it can change without breaking them: by arrival
    "before:<id>", as ever; by when taken "taken:<id>:<sort key>"; by meaning
    "meaning:<id>:<score>" (or "auto:...")."""
    text = f"before:{before_id}" if key is None else f"{order}:{before_id}:{key}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Cursor:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    prefix, _, rest = text.partition(":")
    if prefix == "before":
        before_id = whole_number(rest)
        if before_id is not None:
            return Cursor("received", before_id)
    elif prefix == "taken":
        number, _, key = rest.partition(":")
        before_id = whole_number(number)
        if before_id is not None and _SORT_KEY.fullmatch(key):
            return Cursor("taken", before_id, key)
    elif prefix in ("meaning", "auto"):
        number, _, key = rest.partition(":")
        before_id = whole_number(number)
        if before_id is not None and _SCORE.fullmatch(key):
            return Cursor(prefix, before_id, key)
    raise BadRequest("cursor is not valid: pass back the next_cursor of a previous page.")


def _cursor(request: Request, order: str) -> Cursor | None:
    raw = request.query_params.get("cursor")
    if not raw:
        return None
    cursor = decode_cursor(raw)
    if cursor.order != order:
        made_for = f"match={cursor.order}" if cursor.order in MATCHES else f"order={cursor.order}"
        asked = f"match={order}" if order in MATCHES else f"order={order}"
        raise BadRequest(
            f"cursor was made for {made_for}, not {asked}: pass it back with the order and match of the "
            "page it came from, or start again without a cursor."
        )
    return cursor


def _order(request: Request) -> str:
    order = request.query_params.get("order", "received")
    if order not in image_reads.ORDERS:
        raise BadRequest("order must be received (newest arrival first, the default) or taken (newest capture first).")
    return order


def _statuses(request: Request) -> tuple[str, ...] | None:
    """One status or several, comma-separated (or the parameter given again); None: all."""
    given = request.query_params.getlist("status")
    if not given:
        return None
    statuses = tuple(name.strip() for text in given for name in text.split(","))
    if not all(name in STATUSES for name in statuses):
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}, or several of them separated by commas.")
    return statuses


def _search(request: Request) -> str | None:
    """The search words; None for no search (no `q`, or only spaces)."""
    text = request.query_params.get("q")
    if text is None or not text.strip():
        return None
    if len(text) > MAX_SEARCH_CHARS:
        raise BadRequest(f"q must be at most {MAX_SEARCH_CHARS} characters.")
    return text


def _match(request: Request, search: str | None) -> str:
    """How `q` is matched: "words" (the default), "meaning" or "auto"; "auto" is "words" where
    search by meaning is off."""
    match = request.query_params.get("match", "words")
    if match not in MATCHES:
        raise BadRequest("match must be words (the default: every word, as written), meaning or auto.")
    if match == "words":
        return match
    if search is None:
        raise BadRequest(f"match={match} needs q: the words to search for.")
    if context(request).meaning is None:
        if match == "auto":
            return "words"
        raise BadRequest('Search by meaning is off on this server (search.model is "none"): use match=words.')
    return match


def _sha256(request: Request) -> str | None:
    sha256 = request.query_params.get("sha256")
    if sha256 is None:
        return None
    sha256 = sha256.strip().lower()
    if not _SHA256.fullmatch(sha256):
        raise BadRequest("sha256 must be 64 hexadecimal characters.")
    return sha256


# -- endpoints ----------------------------------------------------------------------------------


async def list_images(request: Request) -> Response:
    """Newest first, keyset paginated; filtered by statuses, digest, or words.
    ---
    summary: List images, newest first (by arrival, or by when taken)
    tags: [images]
    parameters:
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 500, default: 50}}
      - name: cursor
        in: query
        description: >-
          next_cursor of the previous page, passed with the same order (a cursor of the other
          order is a 400)
        schema: {type: string}
      - name: order
        in: query
        description: >-
          received (the default): newest arrival first, by id. taken: newest capture first, by
          the EXIF capture time (metadata.taken_at, the camera's local time), or the arrival
          (received_at, UTC) for an image without one (and while pending, or failed before its
          metadata was read), ties newest id first. taken cannot be combined with q (400)
        schema: {type: string, enum: [received, taken], default: received}
      - name: status
        in: query
        description: >-
          one status, or several separated by commas (pending,processing,done: all but the
          failed ones)
        schema: {type: string, example: "pending,processing,done"}
      - {name: sha256, in: query, description: the image with these bytes, schema: {type: string}}
      - name: q
        in: query
        description: >-
          words to find in file names and captions: each word, as the start of a word, must
          appear (case and accents ignored); at most 200 characters. Results come by arrival
          only: not with order=taken
        schema: {type: string, maxLength: 200}
      - name: match
        in: query
        description: >-
          how q is matched. words (the default): as above. meaning: done images ranked by how
          close their caption is in meaning to q (a sentence-embedding model, search.model),
          best first, each item with its "score" (cosine similarity, -1 to 1), down to
          search.min_score; status (only done images have one) and sha256 still filter.
          auto: meaning, with the images word search also finds first (their score + 1); words
          where search by meaning is off
        schema: {type: string, enum: [words, meaning, auto], default: words}
    responses:
      200:
        description: >-
          {"items": [{"id", "image_id", "filename", "status", "received_at", "error",
          "can_reprocess", "caption", "caption_status", "caption_error", "thumbnails": {"small",
          "medium"}, "links"}], "next_cursor", "limit"}; with match=meaning or auto, each item also
          has "score" and the answer "match". can_reprocess: whether processing it
          again can change its outcome (done; failed for a reason other than its file's:
          not unsupported, corrupt, too_large or missing)
      400:
        description: >-
          a parameter is not valid: an unknown order or status, a cursor of the other order,
          order=taken with q, match=meaning where search.model is "none"
      503:
        description: no database yet (the daemon has not run)
    """
    limit = _limit(request)
    order = _order(request)
    search = _search(request)
    if order == "taken" and search is not None:
        raise BadRequest("order=taken cannot be combined with q: search results come newest arrival first.")
    match = _match(request, search)
    if match != "words":
        return await _list_by_meaning(request, limit, search or "", match)
    cursor = _cursor(request, order)
    page = await reader(request).run(
        image_reads.list_images,
        limit=limit,
        before_id=cursor.before_id if cursor else None,
        before_key=cursor.key if cursor else None,
        status=_statuses(request),
        sha256=_sha256(request),
        search=search,
        order=order,
    )
    base = base_url(request)
    captions = context(request).config.caption.enabled
    next_cursor = None
    if page.next_before_id is not None:
        next_cursor = encode_cursor(page.next_before_id, page.next_key if order == "taken" else None)
    return JsonResponse(
        {
            "items": [serialize.summary(row, base, captions=captions) for row in page.items],
            "next_cursor": next_cursor,
            "limit": limit,
        }
    )


async def _list_by_meaning(request: Request, limit: int, search: str, match: str) -> Response:
    """A page of the done images ranked by the meaning of their captions (match=meaning or auto)."""
    cursor = _cursor(request, match)
    page = await context(request).meaning.page(
        reader(request),
        search,
        limit=limit,
        below=cursor.below if cursor else None,
        statuses=_statuses(request),
        sha256=_sha256(request),
        words=match == "auto",
    )
    base = base_url(request)
    captions = context(request).config.caption.enabled
    next_cursor = None
    if page.next_below is not None:
        score, image_id = page.next_below
        next_cursor = encode_cursor(image_id, repr(score), match)
    items = [serialize.summary(row, base, captions=captions) | {"score": round(score, 4)} for row, score in page.items]
    return JsonResponse({"items": items, "next_cursor": next_cursor, "limit": limit, "match": match})


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
      503:
        description: the image store (an S3 bucket, storage.backend "s3") does not answer now
    """
    ctx = context(request)
    config = ctx.config
    uploads.check_token(request, config)
    started = time.perf_counter()
    problem = await ctx.store_health.problem()
    if problem is not None:
        # The file could wait in the inbox, but no image can be stored or read until it answers.
        raise ServiceUnavailable(f"The image store cannot be used now ({problem}): try again later.", headers={"Retry-After": "5"})
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
          {"id", "image_id" (the same), "filename", "status", "error", "error_kind", "can_reprocess" (as in the
          list), "sha256", "received_at",
          "processed_at", "processing_ms", "timings_ms", "metadata", "caption", "caption_model",
          "caption_device", "caption_runtime", "caption_status", "caption_error", "thumbnails": {"small", "medium"},
          "links"}
      404:
        description: no image with this id
    """
    row = await reader(request).run(image_reads.image_by_id, image_id_of(request))
    if row is None:
        raise NotFound("No image with this id.")
    captions = context(request).config.caption.enabled
    return Response(serialize.record_json(row, base_url(request), captions=captions), media_type=JSON)
