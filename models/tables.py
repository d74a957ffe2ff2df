"""The database schema, as SQLAlchemy 2 declarative tables.

Alembic migrations (models/migrations) create and upgrade the real schema; a test checks
that the migrations and these classes agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, LargeBinary, MetaData, String, Text, text
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}

STATUSES = ("pending", "processing", "done", "failed")
ERROR_KINDS = ("unsupported", "corrupt", "too_large", "missing", "internal")
# The full-text index of file names and captions (migration 0003). An FTS5 virtual table,
# which SQLAlchemy cannot declare: it and the shadow tables SQLite keeps for it live outside
# these classes, and is_schema_object hides them from schema comparisons.
SEARCH_TABLE = "images_search"
# Its PostgreSQL counterpart: a generated tsvector column of `images` and its GIN index.
SEARCH_COLUMN = "search_words"


def is_schema_object(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic's include_name hook: whether a database object is one these classes describe."""
    if type_ == "table" and name is not None:
        return name != SEARCH_TABLE and not name.startswith(f"{SEARCH_TABLE}_")
    if type_ == "column":
        return name != SEARCH_COLUMN
    if type_ == "index":
        return name != f"ix_images_{SEARCH_COLUMN}"
    return True


def sort_key(received_at: datetime | str | None, taken_at: str | None = None) -> str:
    """An image's `sort_taken`: when it was taken (`taken_at`, as the metadata stage writes it,
    "2024-05-01T12:00:00"), else when it arrived (`received_at`, naive UTC), in the same
    ISO 8601 form to the second, so the two compare as text."""
    if taken_at:
        return taken_at
    if isinstance(received_at, datetime):
        return received_at.isoformat(timespec="seconds")
    return (received_at or "").replace(" ", "T")[:19]  # SQLite's text of a DateTime


def _sort_key_default(context: DefaultExecutionContext) -> str:
    """`sort_taken` of a row inserted without one: from the values it is inserted with."""
    values = context.get_current_parameters()
    return sort_key(values.get("received_at"), values.get("taken_at"))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Image(Base):
    """One record per distinct file content (SHA-256)."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # Display name: the path relative to the inbox, or the sanitised upload name.
    filename: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(DateTime)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime)

    # Where the bytes are. Server-side only: never sent to API clients.
    inbox_path: Mapped[str | None] = mapped_column(Text)  # relative to the inbox, while there
    stored_path: Mapped[str | None] = mapped_column(Text)  # relative to the data folder

    format: Mapped[str | None] = mapped_column(String(8))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    mode: Mapped[str | None] = mapped_column(String(16))
    # 64-bit: a file refused as too large keeps its real size (PostgreSQL's INTEGER is 32-bit).
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    exif: Mapped[dict | None] = mapped_column(JSON)
    taken_at: Mapped[str | None] = mapped_column(String(32))
    # The key of GET /api/images?order=taken (migration 0012): sort_key of the row, so when the
    # photo was taken, else when it arrived. Set with the row (from the values inserted, by
    # this default where the writer gives none) and to `taken_at` when metadata with one is
    # recorded (daemon.database.records.prepared_values).
    # Camera clocks keep local time and `received_at` is UTC: the two mix in one order, which
    # is as close as a camera's time allows.
    sort_taken: Mapped[str] = mapped_column(String(32), default=_sort_key_default, server_default="")
    camera_make: Mapped[str | None] = mapped_column(Text)
    camera_model: Mapped[str | None] = mapped_column(Text)
    gps_latitude: Mapped[float | None] = mapped_column(Float)
    gps_longitude: Mapped[float | None] = mapped_column(Float)
    icc_profile: Mapped[str | None] = mapped_column(Text)

    # Relative to the data folder; set once the file is written.
    thumb_small_path: Mapped[str | None] = mapped_column(Text)
    thumb_small_width: Mapped[int | None] = mapped_column(Integer)
    thumb_small_height: Mapped[int | None] = mapped_column(Integer)
    thumb_medium_path: Mapped[str | None] = mapped_column(Text)
    thumb_medium_width: Mapped[int | None] = mapped_column(Integer)
    thumb_medium_height: Mapped[int | None] = mapped_column(Integer)

    caption: Mapped[str | None] = mapped_column(Text)
    caption_model: Mapped[str | None] = mapped_column(Text)
    caption_device: Mapped[str | None] = mapped_column(String(32))
    caption_runtime: Mapped[str | None] = mapped_column(String(32))  # "openvino bfloat16" (migration 0007)
    caption_error: Mapped[str | None] = mapped_column(Text)

    # The work queue (daemon/database/work_queue.py, migration 0005).
    claimed_by: Mapped[int | None] = mapped_column(Integer)  # the daemon_state row of the worker
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")  # claims lost to a dead worker
    stage: Mapped[str | None] = mapped_column(String(16))  # "caption": only that is left (the image is done); None: all
    source_identity: Mapped[str | None] = mapped_column(String(64))  # inode:size:mtime when hashed
    processed_by: Mapped[str | None] = mapped_column(Text)  # host:pid of the worker that recorded it

    hash_ms: Mapped[float | None] = mapped_column(Float)
    metadata_ms: Mapped[float | None] = mapped_column(Float)
    thumbnails_ms: Mapped[float | None] = mapped_column(Float)
    caption_ms: Mapped[float | None] = mapped_column(Float)
    processing_ms: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        Index("ix_images_status_id", "status", "id"),
        # Pages of the list by when the photo was taken, all of them or of one status (0012).
        Index("ix_images_sort_taken", "sort_taken", "id"),
        Index("ix_images_status_sort_taken", "status", "sort_taken", "id"),
        Index("ix_images_processed_at", "processed_at"),
        # Percentiles of processing time, read off the index in order (GET /api/stats).
        Index("ix_images_status_processing_ms", "status", "processing_ms"),
        # The work queue's head (daemon/database/work_queue.py): pending images in claim order.
        Index("ix_images_pending", "id", sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'")),
        # The caption stage's queue: done images whose caption is still to come (migration 0011).
        Index(
            "ix_images_caption_queue",
            "id",
            sqlite_where=text("status = 'done' AND stage = 'caption'"),
            postgresql_where=text("status = 'done' AND stage = 'caption'"),
        ),
        # Done images with a caption: what search by meaning embeds (migration 0013).
        Index(
            "ix_images_captioned",
            "id",
            sqlite_where=text("status = 'done' AND caption IS NOT NULL"),
            postgresql_where=text("status = 'done' AND caption IS NOT NULL"),
        ),
        # An id is never given twice, though images can be deleted (migration 0008).
        {"sqlite_autoincrement": True},
    )


class ImageEmbedding(Base):
    """The embedding of one image's caption by one search model (search.model, migration 0013):
    one row per image and model. A trigger on `images` removes the rows of an image whose
    caption changes or that is deleted; the daemon embeds the caption again."""

    __tablename__ = "image_embeddings"

    # Grows with every row written, never given twice: the API's in-memory index reads what is
    # new since its last read by it.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float16, little-endian (models.text_embedder)
    embedded_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (
        Index("ix_image_embeddings_image_model", "image_id", "model", unique=True),
        Index("ix_image_embeddings_model_seq", "model", "seq"),
        {"sqlite_autoincrement": True},
    )


class DaemonState(Base):
    """One row per daemon process (a worker), kept current, so readers know who is alive, what
    each runs, and whose claims are whose: its id is the worker id of its claims."""

    __tablename__ = "daemon_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    roles: Mapped[str | None] = mapped_column(Text)  # "watch thumbnails captions"
    started_at: Mapped[datetime] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime)
    caption_model: Mapped[str | None] = mapped_column(Text)
    caption_device: Mapped[str | None] = mapped_column(String(32))
    caption_runtime: Mapped[str | None] = mapped_column(String(32))
    caption_status: Mapped[str | None] = mapped_column(Text)
    caption_batches: Mapped[str | None] = mapped_column(Text)  # models/caption_batches.py, JSON (0009)
    # A fault of the environment being waited out ("data disk full"); None when all is well.
    problem: Mapped[str | None] = mapped_column(Text)
    # Set by a clean stop, cleared at start.
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime)


class WatchLease(Base):
    """One row: the daemon (its daemon_state id) that watches the inbox, for as long as it renews
    its lease (migration 0010); NULL holder when no one does."""

    __tablename__ = "watch_lease"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[int | None] = mapped_column(Integer)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)


class ImageTotals(Base):
    """Running totals per status, kept exact by triggers on `images` (migration 0002).

    For each timed column, n_<stage> counts the rows where it is set and s_<stage> sums it, so
    statistics are a read of four rows rather than a pass over the table.
    """

    __tablename__ = "image_totals"

    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    images: Mapped[int] = mapped_column(Integer, server_default="0")
    n_processing: Mapped[int] = mapped_column(Integer, server_default="0")
    s_processing: Mapped[float] = mapped_column(Float, server_default="0")
    n_hash: Mapped[int] = mapped_column(Integer, server_default="0")
    s_hash: Mapped[float] = mapped_column(Float, server_default="0")
    n_metadata: Mapped[int] = mapped_column(Integer, server_default="0")
    s_metadata: Mapped[float] = mapped_column(Float, server_default="0")
    n_thumbnails: Mapped[int] = mapped_column(Integer, server_default="0")
    s_thumbnails: Mapped[float] = mapped_column(Float, server_default="0")
    n_caption: Mapped[int] = mapped_column(Integer, server_default="0")
    s_caption: Mapped[float] = mapped_column(Float, server_default="0")
