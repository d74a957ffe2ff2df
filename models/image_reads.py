"""Reading images: one record by id or digest, what serving its files needs, and the list,
newest first (by arrival, or by when taken) in keyset pages, filtered by statuses, digest or
search words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Integer, Select, String, bindparam, select, tuple_, union_all

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


ORDERS = ("received", "taken")


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_before_id: int | None  # keyset cursor: the next page has ids below this one...
    next_key: str | None = None  # ...and, by order=taken, this sort_taken, or an older one


def statuses_of(status: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """The statuses a list keeps, each once, in the order of STATUSES; None: all of them (no
    status named, or every one). ValueError for a status that is not one, or none at all."""
    if status is None:
        return None
    named = (status,) if isinstance(status, str) else tuple(status)
    unknown = [name for name in named if name not in STATUSES]
    if unknown or not named:
        raise ValueError(f"unknown status {unknown[0]!r}" if unknown else "no status")
    kept = tuple(name for name in STATUSES if name in named)
    return None if len(kept) == len(STATUSES) else kept


def _status_filter(query: Select, statuses: int) -> Select:
    """`statuses` statuses, bound as status_0, status_1, ...: one is an equality, more an IN."""
    if statuses == 1:
        return query.where(images.c.status == bindparam("status_0"))
    if statuses:
        return query.where(images.c.status.in_([bindparam(f"status_{n}") for n in range(statuses)]))
    return query


def _in_order(query: Select, taken: bool, before: bool) -> Select:
    """Newest first by id, or by (sort_taken, id) for order=taken, below the cursor, a page's
    worth: each an index's order, read backwards from the cursor."""
    if taken:
        query = query.order_by(images.c.sort_taken.desc(), images.c.id.desc())
        if before:
            cursor = tuple_(bindparam("before_key", type_=String()), bindparam("before_id", type_=Integer()))
            query = query.where(tuple_(images.c.sort_taken, images.c.id) < cursor)
    else:
        query = query.order_by(images.c.id.desc())
        if before:
            query = query.where(images.c.id < bindparam("before_id"))
    return query.limit(bindparam("limit"))


@lru_cache(maxsize=None)
def _list_statement(dialect: str, before: bool, statuses: int, sha256: bool, search: bool) -> Select:
    """One statement per combination of filters, so each is compiled once."""
    fts5 = search and dialect == "sqlite"
    if fts5:
        # The index drives: FTS5 yields its matches in descending rowid order and takes the
        # cursor as a rowid bound, so a page stops after `limit` rows however many match.
        query = (
            select(*SUMMARY_COLUMNS)
            .limit(bindparam("limit"))
            .select_from(FTS5_TABLE.join(images, images.c.id == FTS5_TABLE.c.rowid))
            .where(FTS5_MATCHES)
            .order_by(FTS5_TABLE.c.rowid.desc())
        )
        if before:
            query = query.where(FTS5_TABLE.c.rowid < bindparam("before_id"))
    else:
        query = _in_order(select(*SUMMARY_COLUMNS), False, before)
        if search:  # PostgreSQL, with a digest: the unique index finds the one row to match
            query = query.where(PG_MATCHES)
    if not fts5:  # with FTS5, the index filters by status (list_images)
        query = _status_filter(query, statuses)
    if sha256:
        query = query.where(images.c.sha256 == bindparam("sha256"))
    return query


@lru_cache(maxsize=None)
def _taken_statement(before: bool, statuses: int, sha256: bool) -> Select:
    """order=taken, of all statuses or of one: a range of (sort_taken, id), or of (status,
    sort_taken, id), read backwards."""
    query = _status_filter(_in_order(select(*SUMMARY_COLUMNS, images.c.sort_taken), True, before), statuses)
    return query.where(images.c.sha256 == bindparam("sha256")) if sha256 else query


@lru_cache(maxsize=None)
def _statuses_statement(taken: bool, before: bool, statuses: int, sha256: bool) -> Select:
    """A page of several statuses: per status, the keys of its first page off its own index
    ((status, id), or (status, sort_taken, id)), a range read backwards and stopped after a
    page, then the newest of those few, then their rows.

    One index range per status, so a page costs the same whatever share of the table the
    statuses hold. An IN over the index gives the rows by status first, which a page would
    have to sort whole (all 94,000 rows of every status but failed); walking the key instead
    and leaving the other statuses out reads the rows that are not wanted, without bound
    when they are many.
    """
    keys = (images.c.sort_taken, images.c.id) if taken else (images.c.id,)
    members = []
    for n in range(statuses):
        member = _in_order(select(*keys), taken, before).where(images.c.status == bindparam(f"status_{n}"))
        if sha256:
            member = member.where(images.c.sha256 == bindparam("sha256"))
        # Each in a subquery of its own: SQLite takes no LIMIT on a member of a UNION.
        members.append(select(*member.subquery(f"of_status_{n}").c))
    merged = union_all(*members)
    newest = merged.order_by(*(merged.selected_columns[key.name].desc() for key in keys)).limit(bindparam("limit"))
    page = newest.subquery("page")
    columns = [*SUMMARY_COLUMNS, images.c.sort_taken] if taken else SUMMARY_COLUMNS
    return (
        select(*columns)
        .select_from(images.join(page, images.c.id == page.c.id))
        .order_by(*(page.c[key.name].desc() for key in keys))
    )


def list_images(
    connection: Connection,
    *,
    limit: int,
    before_id: int | None = None,
    status: str | Sequence[str] | None = None,
    sha256: str | None = None,
    search: str | None = None,
    order: str = "received",
    before_key: str | None = None,
) -> Page:
    """Newest first, `limit` per page, keyset paginated: by id (which grows with registration),
    or with order="taken" by sort_taken (when the photo was taken, else when it arrived), then
    id. The next page starts below `before_id` (with order="taken", below (`before_key`,
    `before_id`)): Page.next_before_id and next_key.

    `status` is one status or several. With one, the (status, id) index, or (status,
    sort_taken, id), serves both the filter and the order, so a page costs the same on the
    last page as on the first; with several, each status's index does (_statuses_statement).
    `search` is what a user typed, matched by search_words against file names and captions
    (no searchable word: an empty page); FTS5's index has the status too, and filters by it in
    the same pass (migration 0003 says why). A search is by id only: ValueError with "taken".
    """
    statuses = statuses_of(status)
    count = len(statuses) if statuses else 0
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}")
    taken = order == "taken"
    if taken and search is not None:
        raise ValueError("order=taken cannot be combined with a search")
    if taken and (before_id is None) != (before_key is None):
        raise ValueError("an order=taken cursor is a sort_taken and an id")
    dialect = connection.dialect.name
    words = match = None
    if search is not None:
        words = search_words(search)
        if not words:
            return Page([], None)
        match = search_expression(words)
        if statuses is not None and dialect == "sqlite":  # plain words: they need no quoting
            listed = " OR ".join(f'"{name}"' for name in statuses)
            match = f"{match} AND status : ({listed})"
    parameters: dict[str, Any] = {"limit": limit + 1, "before_id": before_id, "before_key": before_key, "sha256": sha256}
    parameters.update({f"status_{n}": name for n, name in enumerate(statuses or ())})
    if search is not None:
        parameters.update(match=match, words=words, status=statuses)
    if search is not None and dialect == "postgresql" and sha256 is None:
        rows = pg_search(connection, parameters, before_id is not None)
    elif count > 1 and search is None:
        rows = fetch_all(connection, _statuses_statement(taken, before_id is not None, count, sha256 is not None), parameters)
    elif taken:
        rows = fetch_all(connection, _taken_statement(before_id is not None, count, sha256 is not None), parameters)
    else:
        statement = _list_statement(dialect, before_id is not None, count, sha256 is not None, search is not None)
        rows = fetch_all(connection, statement, parameters)
    if len(rows) > limit:
        last = rows[limit - 1]
        return Page(rows[:limit], last["id"], last["sort_taken"] if taken else None)
    return Page(rows, None)
