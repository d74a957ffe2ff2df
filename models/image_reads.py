"""Reading images: one record by id or digest, what serving its files needs, and the list,
newest first in keyset pages, filtered by status, digest or search words."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select

from models.reads import RECORD_COLUMNS, SUMMARY_COLUMNS, fetch_all, fetch_one, images
from models.search_reads import FTS5_MATCHES, FTS5_TABLE, PG_MATCHES, pg_search, search_expression, search_words
from models.tables import STATUSES

# Built once: SQLAlchemy caches the compiled form of a statement object, and the detail route
# is the hot path.
_BY_ID = select(*RECORD_COLUMNS).where(images.c.id == bindparam("image_id"))
_BY_SHA = select(*RECORD_COLUMNS).where(images.c.sha256 == bindparam("sha256"))
_THUMBNAIL = select(
    images.c.id,
    images.c.status,
    images.c.sha256,
    images.c.thumb_small_path,
    images.c.thumb_small_width,
    images.c.thumb_small_height,
    images.c.thumb_medium_path,
    images.c.thumb_medium_width,
    images.c.thumb_medium_height,
).where(images.c.id == bindparam("image_id"))


def image_by_id(connection: Connection, image_id: int) -> dict[str, Any] | None:
    """The record of one image: every column but the server paths of the original, with
    `exif` as JSON text."""
    return fetch_one(connection, _BY_ID, {"image_id": image_id})


def image_by_sha256(connection: Connection, sha256: str) -> dict[str, Any] | None:
    """The record of the image with these bytes, as image_by_id."""
    return fetch_one(connection, _BY_SHA, {"sha256": sha256})


_ORIGINAL = select(
    images.c.id, images.c.status, images.c.sha256, images.c.filename, images.c.format, images.c.stored_path
).where(images.c.id == bindparam("image_id"))


def original_info(connection: Connection, image_id: int) -> dict[str, Any] | None:
    """Status, digest, name, format and stored original (relative to the data folder) of one image."""
    return fetch_one(connection, _ORIGINAL, {"image_id": image_id})


def thumbnail_info(connection: Connection, image_id: int) -> dict[str, Any] | None:
    """Status, digest and thumbnail columns of one image."""
    return fetch_one(connection, _THUMBNAIL, {"image_id": image_id})


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_before_id: int | None  # keyset cursor: the next page has ids below this one


@lru_cache(maxsize=None)
def _list_statement(dialect: str, before: bool, status: bool, sha256: bool, search: bool) -> Select:
    """One statement per combination of filters (sixteen at most), so each is compiled once."""
    query = select(*SUMMARY_COLUMNS).limit(bindparam("limit"))
    fts5 = search and dialect == "sqlite"
    if fts5:
        # The index drives: FTS5 yields its matches in descending rowid order and takes the
        # cursor as a rowid bound, so a page stops after `limit` rows however many match.
        query = (
            query.select_from(FTS5_TABLE.join(images, images.c.id == FTS5_TABLE.c.rowid))
            .where(FTS5_MATCHES)
            .order_by(FTS5_TABLE.c.rowid.desc())
        )
        if before:
            query = query.where(FTS5_TABLE.c.rowid < bindparam("before_id"))
    else:
        if search:  # PostgreSQL, with a digest: the unique index finds the one row to match
            query = query.where(PG_MATCHES)
        query = query.order_by(images.c.id.desc())
        if before:
            query = query.where(images.c.id < bindparam("before_id"))
    if status and not fts5:  # with FTS5, the index filters by status (list_images)
        query = query.where(images.c.status == bindparam("status"))
    if sha256:
        query = query.where(images.c.sha256 == bindparam("sha256"))
    return query


def list_images(
    connection: Connection,
    *,
    limit: int,
    before_id: int | None = None,
    status: str | None = None,
    sha256: str | None = None,
    search: str | None = None,
) -> Page:
    """Newest first (by id, which grows with registration), `limit` per page, keyset paginated.

    With a status the (status, id) index serves both the filter and the order, so a page costs
    the same on the last page as on the first. `search` is what a user typed, matched by
    search_words against file names and captions (no searchable word: an empty page); FTS5's
    index has the status too, and filters by it in the same pass (migration 0003 says why).
    """
    dialect = connection.dialect.name
    words = match = None
    if search is not None:
        words = search_words(search)
        if not words:
            return Page([], None)
        match = search_expression(words)
        if status is not None and dialect == "sqlite":
            if status not in STATUSES:  # a plain word, so it needs no quoting
                raise ValueError(f"unknown status {status!r}")
            match = f'{match} AND status : "{status}"'
    parameters = {"limit": limit + 1, "before_id": before_id, "status": status, "sha256": sha256}
    if search is not None:
        parameters.update(match=match, words=words)
    if search is not None and dialect == "postgresql" and sha256 is None:
        rows = pg_search(connection, parameters, before_id is not None)
    else:
        statement = _list_statement(dialect, before_id is not None, status is not None, sha256 is not None, search is not None)
        rows = fetch_all(connection, statement, parameters)
    if len(rows) > limit:
        return Page(rows[:limit], rows[limit - 1]["id"])
    return Page(rows, None)
