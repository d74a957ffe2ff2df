"""Copy every record from one database to another (SQLite to PostgreSQL, or any way round),
then check that the two agree.

The records keep their ids, so links, thumbnails and originals (paths relative to the data
folder, which does not move) stay right. The target's own triggers rebuild its statistics
totals and search index as the rows arrive; the daemon's heartbeat row is not copied (the
daemon writes a new one when it starts on the target).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, insert, select, text

from models import migrate
from models.tables import Image, ImageTotals

images = Image.__table__
image_totals = ImageTotals.__table__
BATCH_ROWS = 1000


class TransferRefused(Exception):
    """The copy cannot start; the message says what to do."""


@dataclass(frozen=True)
class Census:
    """What a database holds, in the terms a copy must keep."""

    by_status: dict[str, int]
    size_bytes: int
    max_id: int
    totals: dict[str, int]  # image_totals, as its triggers keep it

    @property
    def images(self) -> int:
        return sum(self.by_status.values())


def census(engine: Engine) -> Census:
    with engine.connect() as connection:
        by_status = dict(connection.execute(select(images.c.status, func.count()).group_by(images.c.status)).all())
        size_bytes, max_id = connection.execute(
            select(func.coalesce(func.sum(images.c.size_bytes), 0), func.coalesce(func.max(images.c.id), 0))
        ).one()
        totals = dict(connection.execute(select(image_totals.c.status, image_totals.c.images)).all())
    return Census(by_status, int(size_bytes), int(max_id), {status: n for status, n in totals.items() if n})


def copy_records(source: Engine, target: Engine) -> tuple[Census, Census]:
    """Copy every image of `source` into `target` (created or upgraded first, and required to
    hold no image), in one transaction; the census of each afterwards."""
    if not migrate.is_current(source):
        raise TransferRefused("the source database is not at the current schema: start the daemon on it, or run `htx db migrate`")
    migrate.upgrade(target)
    with source.connect() as reading, target.begin() as writing:
        already = writing.execute(select(func.count()).select_from(images)).scalar_one()
        if already:
            raise TransferRefused(f"the target database already holds {already} image(s): copy into an empty one")
        rows = reading.execution_options(yield_per=BATCH_ROWS).execute(select(images).order_by(images.c.id))
        for batch in rows.mappings().partitions():
            writing.execute(insert(images), [dict(row) for row in batch])
        if writing.dialect.name == "postgresql":
            # Ids were given, so the sequence did not move: new images must start past them.
            writing.execute(
                text("SELECT setval(pg_get_serial_sequence('images', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM images), false)")
            )
    return census(source), census(target)
