"""What people do to finished images, from the CLI or the API: process again, caption again,
delete. Short write transactions; the daemon does the work itself when it next claims the row.

Each action changes only images that are finished (`done` or `failed`) and not claimed, in one
statement, so a worker holding an image never has it changed under it, and an action either
happens once or not at all: a crash before the commit leaves the image as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import Connection, Row, delete, select, update

from models import trash
from models.store import Store, remove_image_files, stage_in_trash
from models.tables import Image

images = Image.__table__

FINISHED = ("done", "failed")


@dataclass(frozen=True)
class Reprocessing:
    """What a reprocess did: the ids marked, and the finished images asked for that were left
    as they were because their stored original is no longer in the data folder."""

    marked: list[int]
    gone: list[int]


def mark_for_reprocessing(
    connection: Connection, image_ids: Sequence[int], *, failed_only: bool, store: Store
) -> Reprocessing:
    """Finished images back to `pending`, to be processed again from their stored original.

    An image whose original is no longer stored is left as it is: processing it again could
    only fail, and would put "the file disappeared" over the reason it has. The daemon queues
    the rows marked within a heartbeat.
    """
    query = select(images.c.id, images.c.stored_path).where(images.c.status.in_(FINISHED), images.c.stored_path.is_not(None))
    if image_ids:
        query = query.where(images.c.id.in_(list(image_ids)))
    if failed_only:
        query = query.where(images.c.status == "failed")
    found = connection.execute(query).all()
    present = [row.id for row in found if store.exists(row.stored_path)]
    gone = sorted(row.id for row in found if row.id not in set(present))
    if not present:
        return Reprocessing([], gone)
    marked = connection.execute(
        update(images)
        .where(images.c.id.in_(present), images.c.status.in_(FINISHED), images.c.stored_path.is_not(None))
        .values(status="pending", stage=None, inbox_path=None)
        .returning(images.c.id)
    )
    return Reprocessing(sorted(row.id for row in marked), gone)


def mark_for_recaption(connection: Connection, image_ids: Sequence[int]) -> list[int]:
    """Done images queued for the caption stage only: they stay `done`, with their caption
    until the new one replaces it; a daemon that captions takes them from the store. Returns
    the ids marked."""
    query = (
        update(images)
        .where(images.c.status == "done", images.c.stored_path.is_not(None), images.c.id.in_(list(image_ids)))
        .values(stage="caption")
        .returning(images.c.id)
    )
    return sorted(row.id for row in connection.execute(query))


def image_statuses(connection: Connection, image_ids: Sequence[int]) -> dict[int, str]:
    """The status of each of `image_ids` that names an image (unknown ids are left out)."""
    query = select(images.c.id, images.c.status).where(images.c.id.in_(list(image_ids)))
    return {row.id: row.status for row in connection.execute(query)}


@dataclass(frozen=True)
class DeletedImage:
    """The files a deleted record leaves: their keys in the store."""

    id: int
    sha256: str
    original: str | None
    thumbnails: tuple[str, ...]


def deletable_image(connection: Connection, image_id: int) -> DeletedImage | None:
    """The files of a finished image, as a delete would leave them; None when there is no
    finished image of that id. Read before the delete, to put its original in the trash."""
    query = select(
        images.c.sha256, images.c.stored_path, images.c.thumb_small_path, images.c.thumb_medium_path
    ).where(images.c.id == image_id, images.c.status.in_(FINISHED))
    row = connection.execute(query).first()
    return None if row is None else _deleted(image_id, row)


def delete_image(connection: Connection, image_id: int, stored_path: str | None) -> DeletedImage | None:
    """Remove the record of a finished image whose original is still `stored_path` (as
    `deletable_image` read it: the trash holds that file); its search entry and totals follow,
    by trigger. None when there is no such image (it was processed again meanwhile, or is gone).
    Its files are the caller's to remove, after the commit: a crash in between leaves files
    without a record, never a record without its files."""
    query = (
        delete(images)
        .where(images.c.id == image_id, images.c.status.in_(FINISHED), images.c.stored_path.is_not_distinct_from(stored_path))
        .returning(images.c.sha256, images.c.stored_path, images.c.thumb_small_path, images.c.thumb_medium_path)
    )
    row = connection.execute(query).first()
    return None if row is None else _deleted(image_id, row)


def _deleted(image_id: int, row: Row) -> DeletedImage:
    thumbnails = tuple(path for path in (row.thumb_small_path, row.thumb_medium_path) if path)
    return DeletedImage(image_id, row.sha256, row.stored_path, thumbnails)


def stage_original(image: DeletedImage, store: Store, trash_dir: Path) -> trash.Staged:
    """A finished image's original (and the note of why it failed) put in `trash_dir` under
    temporary names, before its record is deleted; trash.TrashUnavailable when the trash cannot
    take them, and then nothing has changed. Named by the record's id: never two originals on
    one name."""
    if image.original is None:
        return trash.Staged()
    return stage_in_trash(store, image.original, f"{image.id}-{PurePosixPath(image.original).name}", trash_dir)


def remove_files(deleted: DeletedImage, store: Store, staged: trash.Staged | None) -> None:
    """A deleted record's thumbnails and original removed, the original, `staged` in the
    trash, given its name there first."""
    if staged is not None:
        staged.keep()
    remove_image_files(store, deleted.original, deleted.thumbnails)
