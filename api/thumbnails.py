"""`/api/images/{image_id}/thumbnails/{size}`: a thumbnail's file, or its link and size.
The docstring's YAML, after `---`, is its OpenAPI entry."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from starlette.requests import Request
from starlette.responses import Response

from api import serialize
from api.context import base_url, context, reader
from api.errors import BadRequest, Conflict, NotFound
from api.params import etags, image_id_of
from api.serialize import JsonResponse
from api.stored_files import open_stored, presigned, read_whole, unavailable
from models import image_reads

log = logging.getLogger("htx.api")

THUMBNAIL_CACHE_CONTROL = "public, max-age=31536000, immutable"
_CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


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
    row = await reader(request).run(image_reads.thumbnail_info, image_id)
    if row is None:
        raise NotFound("No image with this id.")
    if row["status"] == "failed":
        raise BadRequest("Processing Failure")
    relative = row[f"thumb_{size}_path"]
    if not relative and row["status"] == "done":
        raise NotFound("This image has no thumbnails.")
    if not relative:
        raise Conflict("The thumbnail is not made yet: try again shortly.", headers={"Retry-After": "1"})
    content_type = _CONTENT_TYPES.get(PurePosixPath(relative).suffix.lower(), "application/octet-stream")
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
    ctx = context(request)
    store = ctx.store
    try:
        redirect = presigned(store, relative, ctx.config.storage.s3.presign_s)
        if redirect is not None:
            return redirect
        with await open_stored(store, relative) as stored:
            etag = f'"{row["sha256"][:16]}-{size}-{stored.version}"'
            headers |= {"ETag": etag, "Cache-Control": THUMBNAIL_CACHE_CONTROL}
            if etag in etags(request.headers.get("if-none-match", "")) or request.headers.get("if-none-match") == "*":
                return Response(status_code=304, headers=headers)
            content = await read_whole(store, stored)
    except FileNotFoundError:
        log.warning("image %d: thumbnail %s is missing from the store", image_id, size)
        raise NotFound("The thumbnail file is missing.") from None
    except OSError as error:
        raise unavailable(ctx.store_health, error) from None
    return Response(content, media_type=content_type, headers=headers)
