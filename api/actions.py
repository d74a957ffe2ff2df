"""The endpoints that act on one image: its original, delete, process again, caption again.
Each action is also a plain function (delete_one, reprocess, recaption) that api.batch runs
for many images; their refusals are ApiErrors, as the endpoints answer them.

The writes are models.actions' short transactions, on the writer's connection; they need the
upload token when api.upload_token is set. The daemon does the work of a reprocess or a
recaption when it next claims the image, as it does for a new file.
"""

from __future__ import annotations

import logging
import os

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from api import serialize
from api.context import base_url, context, reader, writer
from api.errors import ApiError, Conflict, InsufficientStorage, NotFound, ServiceUnavailable
from api.params import etags, image_id_of
from api.serialize import JsonResponse
from api.stored_files import chunks_of, content_disposition, open_stored, presigned, unavailable
from api.uploads import check_token
from models import actions, image_reads
from models.trash import TrashUnavailable

log = logging.getLogger("htx.api")

_GONE = "The image's original is no longer stored on the server: it cannot be {action}. Drop the same file into the inbox again to put it back, or delete the image."
TRASH_FULL = "The trash folder (paths.trash) is full: the image was not deleted. Make room there and try again."
CAPTIONS_OFF = "Captions are off: set caption.model in the configuration first."
TRASH_BROKEN = "The trash folder (paths.trash) is not a folder the server can write to: the image was not deleted."

_FORMAT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "HEIF": "image/heic",
    "WEBP": "image/webp",
    "AVIF": "image/avif",
}


async def get_original(request: Request) -> Response:
    """The original file, as it was dropped or uploaded.
    ---
    summary: An image's original file
    tags: [images]
    parameters:
      - {name: image_id, in: path, required: true, schema: {type: integer}}
    responses:
      200:
        description: >-
          the bytes, with their content type (image/jpeg, image/png; application/octet-stream
          for a file that is neither), an ETag (its sha256) and Content-Disposition naming the file
      304:
        description: If-None-Match matches
      404:
        description: no image with this id, or its original is no longer on the server
      409:
        description: not stored yet (the image is still pending or processing)
    """
    image_id = image_id_of(request)
    row = await reader(request).run(image_reads.original_info, image_id)
    if row is None:
        raise NotFound("No image with this id.")
    if not row["stored_path"] or row["status"] not in actions.FINISHED:
        raise Conflict("The original is not stored yet: try again shortly.", headers={"Retry-After": "1"})
    etag = f'"{row["sha256"]}"'  # the bytes' own digest: the same forever
    if etag in etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers={"ETag": etag})
    ctx = context(request)
    key = row["stored_path"]
    media_type = _FORMAT_TYPES.get(row["format"] or "", "application/octet-stream")
    filename = os.path.basename(row["filename"]) or f"image-{image_id}"
    headers = {"ETag": etag, "Cache-Control": "private, max-age=0, must-revalidate"}
    try:
        redirect = presigned(ctx.store, key, ctx.config.storage.s3.presign_s)
        if redirect is not None:
            return redirect
        path = ctx.store.local_path(key)
        if path is None:
            stored = await open_stored(ctx.store, key)
            headers |= {"Content-Length": str(stored.size), "Content-Disposition": content_disposition(filename)}
            return StreamingResponse(chunks_of(stored), media_type=media_type, headers=headers)
    except FileNotFoundError:
        path = None
    except OSError as error:
        raise unavailable(ctx.store_health, error) from None
    if path is None or not await run_in_threadpool(os.path.isfile, path):
        log.warning("image %d: its original is missing from the store", image_id)
        raise NotFound("The original file is missing.")
    return FileResponse(path, media_type=media_type, filename=filename, headers=headers)


async def delete_image(request: Request) -> Response:
    """Remove an image: its record, thumbnails and stored original (paths.trash keeps originals).
    ---
    summary: Delete an image
    tags: [images]
    parameters:
      - {name: image_id, in: path, required: true, schema: {type: integer}}
    responses:
      204:
        description: deleted; the same bytes dropped again make a new record
      401:
        description: api.upload_token is set and the request does not carry it
      404:
        description: no image with this id
      409:
        description: the image is pending or processing; delete it once it is done or failed
      503:
        description: paths.trash is set but is not a writable folder; nothing was deleted
      507:
        description: paths.trash has no room for the original; nothing was deleted
    """
    check_token(request, context(request).config)
    await delete_one(request, image_id_of(request))
    return Response(status_code=204)


async def delete_one(request: Request, image_id: int) -> None:
    """Delete one image as DELETE /api/images/{image_id} does (api.batch too); an ApiError
    says why not."""
    config = context(request).config
    image = await writer(request).run(actions.deletable_image, image_id)
    if image is None:
        await _unchanged(request, image_id, "deleted")
    staged = None
    if config.trash_dir is not None:
        # Into the trash before the record goes: a trash that cannot take the original
        # refuses the delete, and the record and its original stay as they were.
        try:
            staged = await run_in_threadpool(actions.stage_original, image, context(request).store, config.trash_dir)
        except TrashUnavailable as error:
            log.warning("image %d: not deleted: %s", image_id, error)
            if error.full:
                raise InsufficientStorage(TRASH_FULL) from None
            raise ServiceUnavailable(TRASH_BROKEN) from None
    try:
        deleted = await writer(request).run(actions.delete_image, image_id, image.original)
    except BaseException:
        if staged is not None:
            await run_in_threadpool(staged.discard)
        raise
    if deleted is None:  # processed again or deleted meanwhile: the trash copy is not its file
        if staged is not None:
            await run_in_threadpool(staged.discard)
        await _unchanged(request, image_id, "deleted")
    await run_in_threadpool(actions.remove_files, deleted, context(request).store, staged)
    log.info("image %d (sha256 %s): deleted", image_id, deleted.sha256[:12])


async def reprocess_image(request: Request) -> Response:
    """Process a finished image again from its stored original.
    ---
    summary: Process an image again
    tags: [images]
    parameters:
      - {name: image_id, in: path, required: true, schema: {type: integer}}
    responses:
      202:
        description: '{"id", "image_id", "status": "pending", "links"}: queued; the daemon takes it within seconds'
      401:
        description: api.upload_token is set and the request does not carry it
      404:
        description: no image with this id
      409:
        description: the image is pending or processing already, or its original is no longer stored
    """
    check_token(request, context(request).config)
    image_id = image_id_of(request)
    refused = (await reprocess(request, [image_id]))[image_id]
    if refused is not None:
        raise refused
    return _queued(request, image_id)


async def reprocess(request: Request, image_ids: list[int]) -> dict[int, ApiError | None]:
    """Finished images queued to be processed again, as POST .../reprocess does (api.batch
    too), in one transaction: for each id, None, or the ApiError saying why not."""
    if not image_ids:  # mark_for_reprocessing takes no ids as all of them
        return {}
    store = context(request).store
    reprocessing = await writer(request).run(actions.mark_for_reprocessing, image_ids, failed_only=False, store=store)
    outcome: dict[int, ApiError | None] = dict.fromkeys(reprocessing.marked)
    outcome |= {image_id: Conflict(_GONE.format(action="processed again")) for image_id in reprocessing.gone}
    return outcome | await _refusals(request, [image_id for image_id in image_ids if image_id not in outcome], "processed again")


async def recaption_image(request: Request) -> Response:
    """Caption a done image again (after a model change, or once the model is installed).
    ---
    summary: Caption an image again
    tags: [images]
    parameters:
      - {name: image_id, in: path, required: true, schema: {type: integer}}
    responses:
      202:
        description: '{"id", "image_id", "status": "done", "caption_status": "pending", "links"}: queued for the caption stage'
      401:
        description: api.upload_token is set and the request does not carry it
      404:
        description: no image with this id
      409:
        description: captions are off (caption.model = "none"), or the image is not done
    """
    check_token(request, context(request).config)
    image_id = image_id_of(request)
    refused = (await recaption(request, [image_id]))[image_id]
    if refused is not None:
        raise refused
    # It stays done, with its caption until the new one replaces it.
    return _queued(request, image_id, {"status": "done", "caption_status": "pending"})


async def recaption(request: Request, image_ids: list[int]) -> dict[int, ApiError | None]:
    """Done images queued for the caption stage, as POST .../recaption does (api.batch too),
    in one transaction: for each id, None, or the ApiError saying why not."""
    if not context(request).config.caption.enabled:
        return {image_id: Conflict(CAPTIONS_OFF) for image_id in image_ids}
    outcome: dict[int, ApiError | None] = dict.fromkeys(await writer(request).run(actions.mark_for_recaption, image_ids))
    rest = [image_id for image_id in image_ids if image_id not in outcome]
    return outcome | await _refusals(request, rest, "captioned again", allowed=("done",))


def _queued(request: Request, image_id: int, state: dict[str, str] | None = None) -> JsonResponse:
    url = serialize.image_url(base_url(request), image_id)
    body = {"id": image_id, "image_id": image_id, **(state or {"status": "pending"}), "links": {"self": url}}
    return JsonResponse(body, status_code=202, headers={"Location": url})


async def _unchanged(request: Request, image_id: int, action: str) -> None:
    """Raise why an image could not be `action`: it does not exist, or is not in a state for it."""
    raise (await _refusals(request, [image_id], action))[image_id]


async def _refusals(
    request: Request, image_ids: list[int], action: str, *, allowed: tuple[str, ...] = actions.FINISHED
) -> dict[int, ApiError]:
    """Why each of these images could not be `action`, read after the attempt."""
    if not image_ids:
        return {}
    statuses = await reader(request).run(actions.image_statuses, image_ids)
    return {image_id: refusal(statuses.get(image_id), action, allowed) for image_id in image_ids}


def refusal(status: str | None, action: str, allowed: tuple[str, ...]) -> ApiError:
    """Why an image of `status` (None: no such image) was not `action`: it does not exist, or
    is not in a state for it, or its original is gone."""
    if status is None:
        return NotFound("No image with this id.")
    needs = " or ".join(allowed)
    if status in ("pending", "processing"):
        return Conflict(f"The image is {status}: it can be {action} once it is {needs}.", headers={"Retry-After": "1"})
    if status not in allowed:
        return Conflict(f"The image is {status}: only an image that is {needs} can be {action}.")
    return Conflict(_GONE.format(action=action))
