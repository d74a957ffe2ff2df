"""Copy every record from one database to another (SQLite to PostgreSQL, or any way round),
then check that the two agree.

The records keep their ids, so links, thumbnails and originals (paths relative to the data
folder, which does not move) stay right. The target's own triggers rebuild its statistics
totals and search index as the rows arrive; the embeddings of search by meaning follow the
images (with new sequence numbers); the daemon's heartbeat row is not copied (the daemon
writes a new one when it starts on the target).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from models import migrate
from models.tables import Image, ImageEmbedding, ImageTotals

images = Image.__table__
image_embeddings = ImageEmbedding.__table__
image_totals = ImageTotals.__table__
# Rows per insert and per transaction of the target. PostgreSQL's trigger updates the one
# image_totals row of a status once per image, and within one transaction each update steps
# over every version of that row the transaction made before (none can be pruned until it
# ends): 100,000 rows in one transaction took 410 s, in transactions of 2,000 rows 30 s.
BATCH_ROWS = 2000


class TransferRefused(Exception):
    """The copy cannot start; the message says what to do."""


class TransferStopped(TransferRefused):
    """The copy failed partway, after some batches were committed; the message says how many
    and what to do."""


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
    hold no image); the census of each afterwards, for the caller to compare.

    The rows go in id order, BATCH_ROWS per transaction of the target, each committed on its
    own; the source is read in one snapshot (PostgreSQL: one repeatable-read transaction).
    A copy that stops partway (the target's server or disk fails, the process is killed)
    leaves the target holding the batches committed so far: another copy into it is then
    refused, as into any database holding images. To retry, drop the target database and
    create it again (PostgreSQL: DROP DATABASE and CREATE DATABASE; SQLite: delete the file),
    then copy again; the source is never written to. A failure after some batches were
    committed raises TransferStopped, saying how many images the target holds.
    """
    if not migrate.is_current(source):
        raise TransferRefused("the source database is not at the current schema: start the daemon on it, or run `htx db migrate`")
    migrate.upgrade(target)
    with target.connect() as checking:
        already = checking.execute(select(func.count()).select_from(images)).scalar_one()
    if already:
        raise TransferRefused(f"the target database already holds {already} image(s): copy into an empty one")
    copied = 0
    with source.connect() as reading, target.connect() as writing:
        if reading.dialect.name == "postgresql":
            # One snapshot for the whole read (the API's reader engine runs each statement
            # in a transaction of its own), which a server-side cursor needs besides.
            reading = reading.execution_options(isolation_level="REPEATABLE READ")
        rows = reading.execution_options(yield_per=BATCH_ROWS).execute(select(images).order_by(images.c.id))
        try:
            for batch in rows.mappings().partitions():
                writing.execute(insert(images), [dict(row) for row in batch])
                writing.commit()
                copied += len(batch)
            vectors = [column for column in image_embeddings.c if column.name != "seq"]
            embedded = reading.execution_options(yield_per=BATCH_ROWS).execute(select(*vectors).order_by(image_embeddings.c.seq))
            for batch in embedded.mappings().partitions():
                writing.execute(insert(image_embeddings), [dict(row) for row in batch])
                writing.commit()
            if writing.dialect.name == "postgresql":
                # Ids were given, so the sequence did not move: new images must start past them.
                writing.execute(
                    text("SELECT setval(pg_get_serial_sequence('images', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM images), false)")
                )
                writing.commit()
        except DBAPIError as error:
            if not copied:
                raise
            reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
            raise TransferStopped(
                f"stopped after copying {copied} image(s) ({reason}): the target now holds them, and a copy into it "
                "is refused; drop the target database, create it again, and copy again"
            ) from error
    return census(source), census(target)
