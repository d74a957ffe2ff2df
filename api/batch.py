"""`POST /api/images/batch`: one of the actions on images (delete, process again, caption
again) on many images at once, each as its own endpoint of api.actions would do it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from api import actions
from api.context import context
from api.errors import EXCEPTION_HANDLERS, ApiError, BadRequest, ContentTooLarge
from api.params import MAX_ID, whole_number
from api.serialize import JsonResponse
from api.uploads import check_token

log = logging.getLogger("htx.api")

MAX_IDS = 500
MAX_BODY_BYTES = 64 * 1024  # 500 ids of 19 digits are 10 KB
# The status each action's own endpoint answers on success.
SUCCESS = {"delete": 204, "reprocess": 202, "recaption": 202}
SHAPE = 'The body must be JSON: {"action": "delete" | "reprocess" | "recaption", "ids": [1, 2, ...]}.'

# For each id, None (done) or (status, message), as its own endpoint would have answered.
Outcomes = dict[int, tuple[int, str] | None]


async def batch_images(request: Request) -> Response:
    """Delete, process again or caption again many images: each as its own endpoint would.
    ---
    summary: Act on many images at once
    tags: [images]
    security: [{bearer: []}]
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [action, ids]
            additionalProperties: false
            properties:
              action: {type: string, enum: [delete, reprocess, recaption]}
              ids: {type: array, minItems: 1, maxItems: 500, uniqueItems: true, items: {type: integer, minimum: 0}}
    responses:
      200:
        description: >-
          {"action", "results": [{"id", "status", "error"}], "succeeded", "failed"}: one result
          per id, in the order given, with the status its own endpoint (DELETE /api/images/{id},
          POST /api/images/{id}/reprocess, POST /api/images/{id}/recaption) would have answered
          (204, 202; 404 no such image, 409 not finished or not done or its original gone or
          captions off, 503 or 507 for the trash) and, when that is not a success, "error", its
          message. Deletes go one by one; reprocess and recaption in one transaction each. Once
          one delete meets a fault of the server (a 5xx: the trash, the database), the rest are
          not tried and answer the same
      400:
        description: the body is not that shape (JSON, a known action, 1 to 500 distinct ids)
      401:
        description: api.upload_token is set and the request does not carry it
      413:
        description: the body is over 64 KiB
    """
    check_token(request, context(request).config)
    action, image_ids = _parse(await _body(request))
    if action == "delete":
        outcomes = await _one_by_one(request, image_ids)
    else:
        together = actions.reprocess if action == "reprocess" else actions.recaption
        outcomes = await _together(request, together, image_ids)
    results: list[dict[str, Any]] = []
    for image_id in image_ids:
        outcome = outcomes[image_id]
        if outcome is None:
            results.append({"id": image_id, "status": SUCCESS[action]})
        else:
            results.append({"id": image_id, "status": outcome[0], "error": outcome[1]})
    succeeded = sum(1 for result in results if "error" not in result)
    log.info("batch %s of %d image(s): %d done, %d not", action, len(image_ids), succeeded, len(image_ids) - succeeded)
    return JsonResponse({"action": action, "results": results, "succeeded": succeeded, "failed": len(results) - succeeded})


async def _body(request: Request) -> bytes:
    """The body, up to MAX_BODY_BYTES (ContentTooLarge past that, however it is sent)."""
    length = whole_number(request.headers.get("content-length", ""))
    if length is not None and length > MAX_BODY_BYTES:
        raise ContentTooLarge(f"The body is over {MAX_BODY_BYTES // 1024} KiB: send at most {MAX_IDS} ids.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ContentTooLarge(f"The body is over {MAX_BODY_BYTES // 1024} KiB: send at most {MAX_IDS} ids.")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> tuple[str, list[int]]:
    """The action and the ids of a body; BadRequest saying what is wrong with it."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest(SHAPE) from None
    if not isinstance(document, dict) or set(document) != {"action", "ids"}:
        raise BadRequest(SHAPE)
    action, image_ids = document["action"], document["ids"]
    if action not in SUCCESS:
        raise BadRequest('action must be "delete", "reprocess" or "recaption".')
    if not isinstance(image_ids, list) or not 1 <= len(image_ids) <= MAX_IDS:
        raise BadRequest(f"ids must be a list of 1 to {MAX_IDS} image ids.")
    # bool is an int to Python, not to JSON.
    if not all(type(image_id) is int and 0 <= image_id <= MAX_ID for image_id in image_ids):
        raise BadRequest("ids must be image ids: whole numbers.")
    seen: set[int] = set()
    for image_id in image_ids:
        if image_id in seen:
            raise BadRequest(f"ids must be distinct: {image_id} is given twice.")
        seen.add(image_id)
    return action, image_ids


async def _answer(request: Request, error: Exception) -> tuple[int, str]:
    """The status and message the app answers `error` with (api.errors, which also logs an
    unexpected one and records a fault of the database or the store)."""
    if isinstance(error, ApiError):
        return error.status_code, error.message
    handler = next(EXCEPTION_HANDLERS[kind] for kind in type(error).__mro__ if kind in EXCEPTION_HANDLERS)
    response = await handler(request, error)
    return response.status_code, orjson.loads(response.body)["error"]


async def _one_by_one(request: Request, image_ids: list[int]) -> Outcomes:
    """Deletes, each as DELETE /api/images/{id} does it (its original into the trash first)."""
    outcomes: Outcomes = {}
    for number, image_id in enumerate(image_ids):
        try:
            await actions.delete_one(request, image_id)
            outcomes[image_id] = None
        except Exception as error:  # noqa: BLE001 - each id's answer is its own, as its endpoint's
            outcomes[image_id] = answer = await _answer(request, error)
            if answer[0] >= 500:  # the server's fault: the next would meet it too
                outcomes |= dict.fromkeys(image_ids[number + 1 :], answer)
                break
    return outcomes


async def _together(
    request: Request, act: Callable[[Request, list[int]], Awaitable[dict[int, ApiError | None]]], image_ids: list[int]
) -> Outcomes:
    """An action that takes many ids in one transaction: each refused one with its reason, or
    all of them with the fault that stopped it."""
    try:
        refused = await act(request, image_ids)
    except Exception as error:  # noqa: BLE001 - answered for every id, as its endpoint would
        return dict.fromkeys(image_ids, await _answer(request, error))
    return {image_id: None if error is None else (error.status_code, error.message) for image_id, error in refused.items()}
