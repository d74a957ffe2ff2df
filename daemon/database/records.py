"""The daemon's writes to the database. Each function runs inside the writer's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from daemon.errors import PipelineError
from daemon.stages.pipeline import PreparedImage
from models.tables import DaemonState, Image, sort_key

images = Image.__table__
daemon_state = DaemonState.__table__


def utcnow() -> datetime:
    """Naive UTC, as stored (SQLite has no time zones)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class KnownImage:
    id: int
    sha256: str
    size_bytes: int
    hash_ms: float | None
    status: str
    filename: str
    inbox_path: str | None  # as stored (models.names.stored_name)
    stored_path: str | None
    error_kind: str | None


# What a KnownImage holds, in its order (daemon.database.work_queue returns them with its claims).
KNOWN_COLUMNS = [
    images.c.id,
    images.c.sha256,
    images.c.size_bytes,
    images.c.hash_ms,
    images.c.status,
    images.c.filename,
    images.c.inbox_path,
    images.c.stored_path,
    images.c.error_kind,
]


def find_by_sha(connection: Connection, sha256: str) -> KnownImage | None:
    row = connection.execute(select(*KNOWN_COLUMNS).where(images.c.sha256 == sha256)).one_or_none()
    return KnownImage(*row) if row else None


def insert_pending(
    connection: Connection,
    *,
    sha256: str,
    filename: str,
    inbox_path: str | None,
    size_bytes: int,
    hash_ms: float,
    source_identity: str | None = None,
    stored_path: str | None = None,
) -> int | None:
    """A new pending image, its bytes in the inbox (`inbox_path`) or already in the store
    (`stored_path`); None if its bytes already have a row (another process registered the
    same bytes a moment ago: the unique digest decides, never two records)."""
    dialect_insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    received_at = utcnow()
    result = connection.execute(
        dialect_insert(images)
        .values(
            sha256=sha256,
            filename=filename,
            status="pending",
            received_at=received_at,
            sort_taken=sort_key(received_at),  # by arrival, until its metadata says when it was taken
            inbox_path=inbox_path,
            stored_path=stored_path,
            size_bytes=size_bytes,
            hash_ms=hash_ms,
            source_identity=source_identity,
        )
        .on_conflict_do_nothing(index_elements=["sha256"])
        .returning(images.c.id)
    )
    return result.scalar_one_or_none()


def update_image(connection: Connection, image_id: int, values: dict[str, Any]) -> None:
    connection.execute(update(images).where(images.c.id == image_id).values(**values))


@dataclass(frozen=True)
class StoredImage:
    """A done image whose original is in the store, for `htx recaption`."""

    id: int
    filename: str
    stored_path: str
    size_bytes: int


def images_to_recaption(connection: Connection, *, missing: bool, ids: Sequence[int] = ()) -> list[StoredImage]:
    """Done images, or only those without a caption (`missing`), or only `ids`; oldest first."""
    query = select(images.c.id, images.c.filename, images.c.stored_path, images.c.size_bytes).where(
        images.c.status == "done", images.c.stored_path.is_not(None)
    )
    if missing:
        query = query.where(images.c.caption.is_(None))
    if ids:
        query = query.where(images.c.id.in_(list(ids)))
    return [StoredImage(*row) for row in connection.execute(query.order_by(images.c.id)).all()]


# The columns of an image without thumbnails.
NO_THUMBNAILS: dict[str, Any] = {
    f"thumb_{size}_{part}": None for size in ("small", "medium") for part in ("path", "width", "height")
}


def failure_values(error: PipelineError) -> dict[str, Any]:
    """Columns of an image that failed with `error`."""
    return {
        "status": "failed",
        "error": error.message,
        "error_kind": error.kind,
        "processed_at": utcnow(),
        "inbox_path": None,
    }


def prepared_values(prepared: PreparedImage) -> dict[str, Any]:
    """Columns filled by the metadata and thumbnail stages."""
    metadata = prepared.metadata
    values: dict[str, Any] = {
        "format": metadata.format,
        "width": metadata.width,
        "height": metadata.height,
        "mode": metadata.mode,
        "size_bytes": metadata.size_bytes,
        "exif": metadata.exif,
        "taken_at": metadata.taken_at,
        "camera_make": metadata.camera_make,
        "camera_model": metadata.camera_model,
        "gps_latitude": metadata.gps_latitude,
        "gps_longitude": metadata.gps_longitude,
        "icc_profile": metadata.icc_profile,
        "metadata_ms": prepared.timings_ms.get("metadata"),
        "thumbnails_ms": prepared.timings_ms.get("thumbnails"),
    }
    if metadata.taken_at is not None:
        # Listed by when it was taken from now on; without a capture time it keeps the key it
        # was registered with, its arrival (these values are the parameters of a statement
        # made once, daemon.database.work_queue.finish: no SQL of received_at can go here).
        values["sort_taken"] = metadata.taken_at
    for thumbnail in prepared.thumbnails:
        prefix = f"thumb_{thumbnail.size_name}"
        values[f"{prefix}_path"] = thumbnail.path
        values[f"{prefix}_width"] = thumbnail.width
        values[f"{prefix}_height"] = thumbnail.height
    return values


def caption_values(
    caption: str | None,
    *,
    error: str | None = None,
    caption_ms: float | None = None,
    model: str | None = None,
    device: str | None = None,
    runtime: str | None = None,
) -> dict[str, Any]:
    """Columns of the caption stage. Model, device and runtime name what made a caption, so
    they are stored only with one; `caption_error` says why there is none (None: no model
    configured)."""
    made = caption is not None
    return {
        "caption": caption,
        "caption_model": model if made else None,
        "caption_device": device if made else None,
        "caption_runtime": runtime if made else None,
        "caption_error": error,
        "caption_ms": caption_ms,
    }


def write_heartbeat(
    connection: Connection,
    worker_id: int,
    *,
    pid: int,
    started_at: datetime,
    caption_model: str | None,
    caption_device: str | None,
    caption_runtime: str | None,
    caption_status: str | None,
    problem: str | None = None,
    caption_batches: str | None = None,
) -> None:
    """The worker is alive (and not stopped), runs this model, and waits out `problem` if any;
    `caption_batches`: its caption batches so far (models.caption_batches, JSON)."""
    connection.execute(
        update(daemon_state)
        .where(daemon_state.c.id == worker_id)
        .values(
            pid=pid,
            started_at=started_at,
            heartbeat_at=utcnow(),
            caption_model=caption_model,
            caption_device=caption_device,
            caption_runtime=caption_runtime,
            caption_status=caption_status,
            caption_batches=caption_batches,
            problem=problem,
            stopped_at=None,
        )
    )


def write_stopped(connection: Connection, worker_id: int) -> None:
    """A clean stop: readers show the worker as stopped at once, not when its heartbeat ages."""
    now = utcnow()
    connection.execute(
        update(daemon_state).where(daemon_state.c.id == worker_id).values(stopped_at=now, heartbeat_at=now, problem=None)
    )
