"""The daemon's writes of search by meaning: embeddings of captions (models.embedding_reads reads
them), and which live processes share the embedding."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import Connection, and_, bindparam, delete, exists, insert, literal, select

from daemon.database.records import utcnow
from models.embedding_reads import image_embeddings
from models.reads import daemon_state, images
from models.status_reads import HEARTBEAT_STALE_S

_FORGET = delete(image_embeddings).where(
    image_embeddings.c.image_id == bindparam("image_id"), image_embeddings.c.model == bindparam("model")
)
# Only while the image still has the caption that was embedded: one recaptioned meanwhile
# (the trigger of migration 0013 has removed its row) waits for the embedding of its new one.
_STORE = insert(image_embeddings).from_select(
    ["image_id", "model", "vector", "embedded_at"],
    select(
        bindparam("image_id"), bindparam("model"), bindparam("vector"), bindparam("embedded_at")
    ).where(
        exists().where(
            images.c.id == bindparam("image_id"), images.c.status == "done", images.c.caption == bindparam("caption")
        )
    ),
)


def store(connection: Connection, model: str, embedded: Sequence[tuple[int, str, bytes]]) -> None:
    """Record (image id, the caption embedded, its vector) of `model`, replacing older rows."""
    if not embedded:
        return
    now = utcnow()
    rows = [
        {"image_id": image_id, "model": model, "caption": caption, "vector": vector, "embedded_at": now}
        for image_id, caption, vector in embedded
    ]
    connection.execute(_FORGET, [{"image_id": row["image_id"], "model": model} for row in rows])
    connection.execute(_STORE, rows)


def forget_model(connection: Connection, model: str) -> int:
    """Remove every embedding of `model` (all its captions wait again); how many."""
    return connection.execute(delete(image_embeddings).where(image_embeddings.c.model == model)).rowcount


def forget_other_models(connection: Connection, model: str) -> int:
    """Remove the embeddings of every model but `model`; how many."""
    return connection.execute(delete(image_embeddings).where(image_embeddings.c.model != model)).rowcount


def embedders(connection: Connection) -> list[int]:
    """The daemon_state ids of the live processes that embed (those with the captions role),
    in order: each takes the images whose id modulo their number is its place among them."""
    since = utcnow() - timedelta(seconds=HEARTBEAT_STALE_S)
    query = (
        select(daemon_state.c.id)
        .where(
            and_(
                daemon_state.c.stopped_at.is_(None),
                daemon_state.c.heartbeat_at >= since,
                daemon_state.c.roles.like(literal("%captions%")),
            )
        )
        .order_by(daemon_state.c.id)
    )
    return list(connection.execute(query).scalars())
