"""Reading the embeddings of search by meaning (migration 0013): what waits to be embedded (the
daemon), what is new since a read (the API's in-memory index), how far a model has got
(/api/stats, /metrics), and the records of the images a search ranked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, exists, func, literal_column, select

from models.reads import SUMMARY_COLUMNS, images
from models.tables import ImageEmbedding

image_embeddings = ImageEmbedding.__table__

_EMBEDDED = exists().where(
    image_embeddings.c.image_id == images.c.id, image_embeddings.c.model == bindparam("model")
)
# Done images with a caption (the partial index ix_images_captioned) and no embedding by the model.
_CAPTIONED = and_(images.c.status == "done", images.c.caption.is_not(None))
_WAITING = select(images.c.id, images.c.caption).where(_CAPTIONED, ~_EMBEDDED)
_COUNT_EMBEDDED = select(func.count()).select_from(image_embeddings).where(image_embeddings.c.model == bindparam("model"))
# Off the partial index, which SQLite's planner passes over for a scan of the table (25 ms
# against 7 at 100,000 rows).
_COUNT_CAPTIONED = (
    select(func.count()).select_from(images).where(_CAPTIONED).with_hint(images, "INDEXED BY ix_images_captioned", "sqlite")
)
_SUMMARIES = select(*SUMMARY_COLUMNS).where(
    images.c.id.in_(bindparam("ids", expanding=True)), images.c.status.in_(bindparam("statuses", expanding=True))
)
_SINCE = (
    select(image_embeddings.c.seq, image_embeddings.c.image_id, image_embeddings.c.vector)
    .where(image_embeddings.c.model == bindparam("model"), image_embeddings.c.seq > bindparam("after"))
    .order_by(image_embeddings.c.seq)
    .limit(bindparam("limit"))
)


@dataclass(frozen=True)
class EmbeddingCounts:
    embedded: int  # images with an embedding by the model
    waiting: int  # done images with a caption, less those embedded (see counts)


def waiting(
    connection: Connection,
    model: str,
    *,
    limit: int,
    part: tuple[int, int] = (0, 1),
    processed_since: datetime | None = None,
) -> list[tuple[int, str]]:
    """Up to `limit` (id, caption) of done images whose caption has no embedding by `model`,
    newest first (a reindex makes the new photos searchable first); of a fleet of `count`
    embedders, only the ids that are `number` modulo `count`, as `part` = (number, count).

    With `processed_since`, only images recorded since then, off the processed_at index: what
    an idle daemon asks every second. Without, the walk of every captioned image (the partial
    index ix_images_captioned), which costs milliseconds a 10,000 images when none waits."""
    number, count = part
    query = _WAITING
    if count > 1:
        query = query.where(images.c.id % literal_column(str(int(count))) == literal_column(str(int(number))))
    if processed_since is not None:
        query = query.where(images.c.processed_at >= processed_since).order_by(images.c.processed_at.desc())
    else:
        query = query.order_by(images.c.id.desc())
    query = query.limit(limit)
    return [(row.id, row.caption) for row in connection.execute(query, {"model": model})]


def embedded_count(connection: Connection, model: str) -> int:
    return connection.execute(_COUNT_EMBEDDED, {"model": model}).scalar_one()


def counts(connection: Connection, model: str) -> EmbeddingCounts:
    """Two counts off indexes (14 ms at 100,000 images on SQLite), not the walk that finds
    which images wait (130 ms): `waiting` is the done images with a caption less the
    embeddings, so an image being processed again, which keeps its embedding until its
    caption changes, hides one that waits until it is done again."""
    embedded = embedded_count(connection, model)
    captioned = connection.execute(_COUNT_CAPTIONED).scalar_one()
    return EmbeddingCounts(embedded, max(0, captioned - embedded))


def written_since(connection: Connection, model: str, after: int, *, limit: int) -> list[tuple[int, int, bytes]]:
    """(seq, image_id, vector) of the rows of `model` written after `after`, in order."""
    rows = connection.execute(_SINCE, {"model": model, "after": after, "limit": limit})
    return [(row.seq, row.image_id, bytes(row.vector)) for row in rows]


def summaries(connection: Connection, image_ids: Sequence[int], statuses: Sequence[str], sha256: str | None) -> list[dict[str, Any]]:
    """The list items of those of `image_ids` that exist and have one of `statuses` (and the
    digest, when given), in no order."""
    if not image_ids or not statuses:
        return []
    query = _SUMMARIES if sha256 is None else _SUMMARIES.where(images.c.sha256 == bindparam("sha256"))
    parameters = {"ids": list(image_ids), "statuses": list(statuses), "sha256": sha256}
    return [dict(row) for row in connection.execute(query, parameters).mappings()]
