"""Rows into the JSON a client sees. Fields are listed one by one: a new column reaches
clients only when it is added here, so a server path can never slip out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from starlette.responses import Response

from models.caption_state import caption_state
from models.stats_reads import STAGES, Stats, Worker

THUMBNAIL_SIZES = ("small", "medium")


def timestamp(value: datetime | None) -> str | None:
    """Stored naive UTC -> ISO 8601 with a Z."""
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


def milliseconds(value: float | None) -> float | None:
    """A duration to 0.1 ms: finer digits are the timer's noise, not information."""
    return None if value is None else round(value, 1)


def image_url(base: str, image_id: int) -> str:
    return f"{base}/api/images/{image_id}"


def thumbnail_url(base: str, image_id: int, size: str) -> str:
    return f"{base}/api/images/{image_id}/thumbnails/{size}"


def caption_status(row: Mapping[str, Any], *, captions: bool) -> str | None:
    """Where an image's caption stands: "done", "pending" (coming: the image is still being
    processed, or done and waiting for the caption stage, e.g. while the model is prepared),
    "failed" (`caption_error` says why), or None: none is coming (captions are off, or the
    image failed)."""
    if row["stage"] == "caption":
        return "pending"
    if row["caption"] is not None:
        return "done"
    if row["caption_error"] is not None:
        return "failed"
    if captions and row["status"] in ("pending", "processing"):
        return "pending"
    return None


# The kinds of failure (models.tables.ERROR_KINDS) that processing the image again would only
# repeat: the file itself is the problem, or there is no file left to process.
FINAL_ERROR_KINDS = frozenset(
    {
        "unsupported",  # not a JPEG or PNG, by its bytes
        "corrupt",  # its bytes do not decode
        "too_large",  # over pipeline.max_pixels (or the byte limit): the same bytes stay over it
        "missing",  # gone before it was processed, or its stored original is: nothing to read
    }
)


def can_reprocess(row: Mapping[str, Any]) -> bool:
    """Whether processing the image again (POST /api/images/{id}/reprocess) can change its
    outcome: a done image, yes (a newer daemon, other settings, a caption model since); a
    failed one unless its `error_kind` is in FINAL_ERROR_KINDS, so yes for `internal` (the
    server failed, not the file) and for a failure without a kind or of a kind this server
    does not know (trying again is how to find out); pending or processing, no: not finished."""
    if row["status"] == "done":
        return True
    return row["status"] == "failed" and row["error_kind"] not in FINAL_ERROR_KINDS


def summary(row: Mapping[str, Any], base: str, *, captions: bool = True) -> dict[str, Any]:
    """One item of the list: what a gallery tile shows, so a page of them needs no other request.

    Written out rather than built in loops: it runs for every row of every page (a third less
    time per page of 50 than with the thumbnails made by a comprehension).
    """
    url = image_url(base, row["id"])
    return {
        "id": row["id"],
        "image_id": row["id"],
        "filename": row["filename"],
        "status": row["status"],
        "received_at": timestamp(row["received_at"]),
        "error": row["error"],
        "can_reprocess": can_reprocess(row),
        "caption": row["caption"],
        "caption_status": caption_status(row, captions=captions),
        "caption_error": row["caption_error"],
        "thumbnails": {
            "small": f"{url}/thumbnails/small" if row["thumb_small_path"] else None,
            "medium": f"{url}/thumbnails/medium" if row["thumb_medium_path"] else None,
        },
        "links": {"self": url},
    }


def _metadata(row: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata object, without `exif` (see record_json)."""
    metadata: dict[str, Any] = {
        "format": row["format"],
        "width": row["width"],
        "height": row["height"],
        "mode": row["mode"],
        "size_bytes": row["size_bytes"],
        "taken_at": row["taken_at"],
        "icc_profile": row["icc_profile"],
    }
    if row["camera_make"] is not None or row["camera_model"] is not None:
        metadata["camera"] = {"make": row["camera_make"], "model": row["camera_model"]}
    if row["gps_latitude"] is not None and row["gps_longitude"] is not None:
        metadata["gps"] = {"latitude": row["gps_latitude"], "longitude": row["gps_longitude"]}
    return metadata


def record_json(row: Mapping[str, Any], base: str, *, captions: bool = True, **extra: Any) -> bytes:
    """The whole record of one image, as DESIGN.md lists it, encoded; `extra` keys are added.

    `row["exif"]` is the JSON text the daemon stored (models.reads): it is placed into the
    answer as it is, as the last member of `metadata`, which is the last member of the record.
    """
    image_id = row["id"]
    thumbnails = {
        size: thumbnail_url(base, image_id, size) if row[f"thumb_{size}_path"] else None for size in THUMBNAIL_SIZES
    }
    record = {
        "id": image_id,
        "image_id": image_id,  # the original HTX API's name: its clients read it
        "filename": row["filename"],
        "status": row["status"],
        "error": row["error"],
        "error_kind": row["error_kind"],
        "can_reprocess": can_reprocess(row),
        "sha256": row["sha256"],
        "received_at": timestamp(row["received_at"]),
        "processed_at": timestamp(row["processed_at"]),
        "processing_ms": milliseconds(row["processing_ms"]),
        "timings_ms": {stage: milliseconds(row[f"{stage}_ms"]) for stage in STAGES},
        "processed_by": row["processed_by"],
        "attempts": row["attempts"],
        "caption": row["caption"],
        "caption_model": row["caption_model"],
        "caption_device": row["caption_device"],
        "caption_runtime": row["caption_runtime"],
        "caption_status": caption_status(row, captions=captions),
        "caption_error": row["caption_error"],
        "thumbnails": thumbnails,
        "links": {"self": image_url(base, image_id)},
        **extra,
        "metadata": _metadata(row),
    }
    encoded = dumps(record)
    assert encoded.endswith(b"}}")
    return b"".join((encoded[:-2], b',"exif":', (row["exif"] or "null").encode(), b"}}"))


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. orjson: the encoding was the largest cost of a detail answer after
    the query itself (9 of 110 microseconds with the standard library's encoder)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


JSON = "application/json"


class JsonResponse(Response):
    """Starlette's JSONResponse, encoded by `dumps`."""

    media_type = JSON

    def render(self, content: Any) -> bytes:
        return dumps(content)


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def stats(stats: Stats, now: datetime, *, captions_configured: bool = True, lease_s: float | None = None) -> dict[str, Any]:
    """The answer of /api/stats; `now` (naive UTC) ages the workers' heartbeats, and one
    heard from last over `lease_s` ago (pipeline.lease_s) is "gone"."""
    finished = stats.finished
    return {
        "total": stats.total,
        "by_status": stats.by_status,
        "finished": finished,
        "success_rate": _rate(stats.by_status["done"], finished),
        "failure_rate": _rate(stats.by_status["failed"], finished),
        "queue_depth": stats.queue_depth,
        "processing_ms": {
            "average": milliseconds(stats.average_ms),
            "p50": milliseconds(stats.p50_ms),
            "p95": milliseconds(stats.p95_ms),
        },
        "stage_average_ms": {stage: milliseconds(value) for stage, value in stats.stage_average_ms.items()},
        "last_hour": {
            "processed": stats.processed_last_hour,
            "per_minute": round(stats.processed_last_hour / 60, 3),
        },
        "caption": caption_json(stats, configured=captions_configured),
        "problem": stats.problem,
        "workers": [worker_json(worker, now, lease_s) for worker in stats.workers],
    }


def caption_json(stats: Stats, *, configured: bool) -> dict[str, Any]:
    """What makes the captions now, or why nothing does, and how many done images wait for one."""
    state = caption_state(stats.caption_status, configured=configured)
    available, reason, fix = state.available, state.reason, state.fix
    return {
        "model": stats.caption_model,
        "device": stats.caption_device,
        "runtime": stats.caption_runtime,
        "available": available,
        "reason": reason,
        "fix": fix,
        "waiting": stats.uncaptioned,
    }


def worker_json(worker: Worker, now: datetime, lease_s: float | None = None) -> dict[str, Any]:
    return {
        "name": worker.name,
        "roles": worker.roles.split() if worker.roles else [],
        "state": worker.status.state(now, lease_s),
        "heartbeat_age_s": round(max(0.0, worker.status.heartbeat_age_s(now)), 1),
        "holding": worker.holding,
        "processed_last_hour": worker.processed_last_hour,
        "per_minute": round(worker.processed_last_hour / 60, 3),
        "problem": worker.status.problem,
    }
