"""What people do to finished images, from the CLI or the API: process again, caption again,
delete. Short write transactions; the daemon does the work itself when it next claims the row.

Each action changes only images that are finished (`done` or `failed`) and not claimed, in one
statement, so a worker holding an image never has it changed under it, and an action either
happens once or not at all: a crash before the commit leaves the image as it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, delete, select, update

from models.names import ERROR_NOTE_SUFFIX, error_note
from models.tables import Image

images = Image.__table__

FINISHED = ("done", "failed")


def mark_for_reprocessing(connection: Connection, image_ids: Sequence[int], *, failed_only: bool) -> list[int]:
    """Finished images back to `pending`, to be processed again from their stored original.

    The daemon queues such rows within a heartbeat. Returns the ids marked.
    """
    query = update(images).where(images.c.status.in_(FINISHED), images.c.stored_path.is_not(None))
    if image_ids:
        query = query.where(images.c.id.in_(list(image_ids)))
    if failed_only:
        query = query.where(images.c.status == "failed")
    marked = connection.execute(query.values(status="pending", stage=None, inbox_path=None).returning(images.c.id))
    return sorted(row.id for row in marked)


def mark_for_recaption(connection: Connection, image_ids: Sequence[int]) -> list[int]:
    """Done images back to `pending` for the caption stage only: a daemon that captions takes
    them from the store, and they are `done` again with a new caption. Returns the ids marked."""
    query = (
        update(images)
        .where(images.c.status == "done", images.c.stored_path.is_not(None), images.c.id.in_(list(image_ids)))
        .values(status="pending", stage="caption")
        .returning(images.c.id)
    )
    return sorted(row.id for row in connection.execute(query))


def image_statuses(connection: Connection, image_ids: Sequence[int]) -> dict[int, str]:
    """The status of each of `image_ids` that names an image (unknown ids are left out)."""
    query = select(images.c.id, images.c.status).where(images.c.id.in_(list(image_ids)))
    return {row.id: row.status for row in connection.execute(query)}


@dataclass(frozen=True)
class DeletedImage:
    """The files a deleted record leaves, relative to the data folder."""

    id: int
    sha256: str
    original: str | None
    thumbnails: tuple[str, ...]


def delete_image(connection: Connection, image_id: int) -> DeletedImage | None:
    """Remove the record of a finished image (its search entry and totals follow, by trigger);
    None when there is no finished image of that id. Its files are the caller's to remove,
    after the commit: a crash in between leaves files without a record, never a record
    without its files."""
    query = (
        delete(images)
        .where(images.c.id == image_id, images.c.status.in_(FINISHED))
        .returning(images.c.sha256, images.c.stored_path, images.c.thumb_small_path, images.c.thumb_medium_path)
    )
    row = connection.execute(query).first()
    if row is None:
        return None
    thumbnails = tuple(path for path in (row.thumb_small_path, row.thumb_medium_path) if path)
    return DeletedImage(image_id, row.sha256, row.stored_path, thumbnails)


def remove_files(deleted: DeletedImage, data_dir: Path, trash_dir: Path | None) -> None:
    """A deleted record's thumbnails, and its original removed or moved to `trash_dir`.

    Files already gone are no error: a delete that crashed after its commit may be repeated
    by hand, or the files were never made.
    """
    for thumbnail in deleted.thumbnails:
        (data_dir / thumbnail).unlink(missing_ok=True)
    if deleted.original is None:
        return
    original = data_dir / deleted.original
    note = error_note(original)
    if trash_dir is None:
        original.unlink(missing_ok=True)
        note.unlink(missing_ok=True)
        return
    trash_dir.mkdir(parents=True, exist_ok=True)
    # Named by the record's id: never two originals on one name.
    for source, suffix in ((original, ""), (note, ERROR_NOTE_SUFFIX)):
        try:
            shutil.move(source, trash_dir / f"{deleted.id}-{original.name}{suffix}")
        except FileNotFoundError:
            pass
