"""The read queries of the API. Every SQL statement the API runs is here; api/ holds none.

Each function takes an open connection (the API's is read-only) and returns plain values.
Statistics are SQL aggregates over indexes: no function here loads a table into Python.
"""

from __future__ import annotations

from functools import lru_cache
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Connection,
    Dialect,
    Integer,
    RowMapping,
    case,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    column,
    func,
    literal_column,
    or_,
    select,
    table,
)
from sqlalchemy.dialects.postgresql import ARRAY

from models.tables import SEARCH_COLUMN, SEARCH_TABLE, STATUSES, DaemonState, Image, ImageTotals, WatchLease

images = Image.__table__
daemon_state = DaemonState.__table__
image_totals = ImageTotals.__table__
watch_lease = WatchLease.__table__

# Columns a client may see, plus the thumbnail paths the API needs to serve the files.
# `inbox_path` and `stored_path` are never read: a server path cannot leak from what was not
# read; nor is the queue's bookkeeping (claims, leases, the inbox file's identity).
_INTERNAL_COLUMNS = ("inbox_path", "stored_path", "claimed_by", "lease_until", "source_identity")
# `exif` comes as the JSON text the daemon stored, which the API passes on without decoding it
# and encoding it again (a camera's EXIF is about 1 KB: 18 microseconds per detail request);
# the cast keeps psycopg from decoding PostgreSQL's json for us.
_RECORD_COLUMNS = [
    cast(column, Text).label("exif") if column.name == "exif" else column
    for column in images.c
    if column.name not in _INTERNAL_COLUMNS
]
# What a list item shows (a gallery tile: name, status, caption or why there is none, and
# whether there is a thumbnail), plus the digest uploads look duplicates up by.
_SUMMARY_COLUMNS = [
    images.c.id,
    images.c.filename,
    images.c.status,
    images.c.received_at,
    images.c.sha256,
    images.c.error,
    images.c.caption,
    images.c.caption_error,
    images.c.stage,
    images.c.thumb_small_path,
    images.c.thumb_medium_path,
]
# The search index of migration 0003, for the statements only: it is not in the metadata.
# SQLite: the FTS5 table. PostgreSQL: the tsvector column and the function making its queries.
_search = table(SEARCH_TABLE, column("rowid", Integer))
_MATCHES = literal_column(SEARCH_TABLE).op("MATCH")(bindparam("match"))
_SEARCH_WORDS = literal_column(f"images.{SEARCH_COLUMN}")
# The tsquery as a scalar subquery: PostgreSQL computes it once per statement, whatever the
# plan. A bare call is computed once only where the planner folds it into a constant (a
# custom plan of the IMMUTABLE function); in a generic plan, or filtering the rows of a walk,
# it ran for every row: 27 microseconds each, 2.7 s for a word found nowhere in 100,000 rows.
_PG_QUERY = select(func.htx_search_query(bindparam("words", type_=ARRAY(Text)))).scalar_subquery()
_PG_MATCHES = _SEARCH_WORDS.op("@@")(_PG_QUERY)
MAX_SEARCH_TERMS = 16
# PostgreSQL: the newest rows a search walks before it asks the index for the older matches,
# and how many more a second walk may read when the first found some (_pg_search says why).
# About 1 microsecond a row, measured at 100,000 rows.
SEARCH_WALK_ROWS = 1000
SEARCH_WALK_MORE = 8000

# Built once: SQLAlchemy caches the compiled form of a statement object, and the detail route
# is the hot path.
_BY_ID = select(*_RECORD_COLUMNS).where(images.c.id == bindparam("image_id"))
_BY_SHA = select(*_RECORD_COLUMNS).where(images.c.sha256 == bindparam("sha256"))
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
    return _fetch_one(connection, _BY_ID, {"image_id": image_id})


@dataclass(frozen=True)
class _Compiled:
    statement: Select  # kept alive, so its id() in the cache key is never reused
    sql: str
    parameters: tuple[str, ...]
    defaults: dict[str, Any]  # values of the statement's own parameters (SQLite's OFFSET 0)
    names: tuple[str, ...]
    # (column, conversion) for the columns whose type converts what the driver returns: the
    # date-times, stored as text in SQLite.
    conversions: tuple[tuple[str, Callable[[Any], Any]], ...]


_compiled: dict[tuple[str, int], _Compiled] = {}


def _compile(dialect: Dialect, statement: Select) -> _Compiled:
    key = (dialect.name, id(statement))
    found = _compiled.get(key)
    if found is None:
        compiled = statement.compile(dialect=dialect)
        columns = list(statement.selected_columns)
        processors = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        found = _Compiled(
            statement=statement,
            sql=str(compiled),
            parameters=tuple(compiled.positiontup or ()),
            defaults=dict(compiled.params),
            names=tuple(column.name for column in columns),
            conversions=tuple(
                (column.name, process) for column, process in zip(columns, processors) if process is not None
            ),
        )
        _compiled[key] = found
    return found


def _fetch_all(connection: Connection, statement: Select, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of `statement` as dicts, run on the DBAPI cursor.

    For the API's hot paths: SQLAlchemy's execution and result layers cost twice the query
    itself (measured 38 against 18 microseconds for a detail row). The statement is still
    SQLAlchemy's, compiled once; values get the column types' own conversions.
    PostgreSQL's round trip dwarfs that cost, so there the statement runs the usual way.
    """
    if connection.dialect.name != "sqlite":
        return [dict(row) for row in connection.execute(statement, parameters).mappings()]
    compiled = _compile(connection.dialect, statement)
    cursor = connection.connection.driver_connection.cursor()
    try:
        values = [parameters[name] if name in parameters else compiled.defaults[name] for name in compiled.parameters]
        cursor.execute(compiled.sql, values)
        rows = cursor.fetchall()
    finally:
        cursor.close()  # ends SQLite's implicit read transaction
    names, conversions = compiled.names, compiled.conversions
    records = []
    for row in rows:
        record = dict(zip(names, row))
        for name, convert in conversions:
            value = record[name]
            if value is not None:
                record[name] = convert(value)
        records.append(record)
    return records


def _fetch_one(connection: Connection, statement: Select, parameters: dict[str, Any]) -> dict[str, Any] | None:
    rows = _fetch_all(connection, statement, parameters)
    return rows[0] if rows else None


def image_by_sha256(connection: Connection, sha256: str) -> dict[str, Any] | None:
    """The record of the image with these bytes, as image_by_id."""
    return _fetch_one(connection, _BY_SHA, {"sha256": sha256})


_ORIGINAL = select(
    images.c.id, images.c.status, images.c.sha256, images.c.filename, images.c.format, images.c.stored_path
).where(images.c.id == bindparam("image_id"))


def original_info(connection: Connection, image_id: int) -> dict[str, Any] | None:
    """Status, digest, name, format and stored original (relative to the data folder) of one image."""
    return _fetch_one(connection, _ORIGINAL, {"image_id": image_id})


def thumbnail_info(connection: Connection, image_id: int) -> dict[str, Any] | None:
    """Status, digest and thumbnail columns of one image."""
    return _fetch_one(connection, _THUMBNAIL, {"image_id": image_id})


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_before_id: int | None  # keyset cursor: the next page has ids below this one


def search_words(text: str) -> list[str]:
    """The words of a search: whitespace-separated, with a letter or digit (others hold no
    token), the first MAX_SEARCH_TERMS of them."""
    # Both indexes read their query as a C string: a NUL would end it inside a word.
    words = [word for word in text.replace("\0", " ").split() if any(character.isalnum() for character in word)]
    return words[:MAX_SEARCH_TERMS]


def search_expression(words: list[str]) -> str:
    """Search words as an FTS5 query: every word, as a prefix, in the file name or the caption.

    Each word becomes a quoted string (its quotes doubled), so nothing a user types is FTS5
    syntax: `AND`, `-`, `*`, `"`, `:` or `{` are searched as text, never parsed. A quoted
    string is a phrase of the word's tokens ("img_0042" finds IMG_0042.jpg), and `*` makes its
    last token a prefix, so results come while a word is still typed. PostgreSQL's
    htx_search_query (migration 0003) builds the same query from the same words.
    """
    phrases = " ".join('"' + word.replace('"', '""') + '"*' for word in words)
    return "{filename caption} : (" + phrases + ")"


@lru_cache(maxsize=None)
def _list_statement(dialect: str, before: bool, status: bool, sha256: bool, search: bool) -> Select:
    """One statement per combination of filters (sixteen at most), so each is compiled once."""
    query = select(*_SUMMARY_COLUMNS).limit(bindparam("limit"))
    fts5 = search and dialect == "sqlite"
    if fts5:
        # The index drives: FTS5 yields its matches in descending rowid order and takes the
        # cursor as a rowid bound, so a page stops after `limit` rows however many match.
        query = (
            query.select_from(_search.join(images, images.c.id == _search.c.rowid))
            .where(_MATCHES)
            .order_by(_search.c.rowid.desc())
        )
        if before:
            query = query.where(_search.c.rowid < bindparam("before_id"))
    else:
        if search:  # PostgreSQL, with a digest: the unique index finds the one row to match
            query = query.where(_PG_MATCHES)
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
        rows = _pg_search(connection, parameters, before_id is not None)
    else:
        statement = _list_statement(dialect, before_id is not None, status is not None, sha256 is not None, search is not None)
        rows = _fetch_all(connection, statement, parameters)
    if len(rows) > limit:
        return Page(rows[:limit], rows[limit - 1]["id"])
    return Page(rows, None)


def _pg_search(connection: Connection, parameters: dict[str, Any], before: bool) -> list[dict[str, Any]]:
    """A page of a search on PostgreSQL: the newest rows walked newest first, then, if they
    hold fewer matches than the page needs, the GIN index for the older ones.

    The planner cannot choose between the two well. It estimates a tsquery's matches from
    the column's statistics, but every word of a search is a prefix (`dog:*`), and a prefix
    gets a flat 2% until the statistics hold 100 common words, as they did not at 100,000
    synthetic rows; nor can a count tell where the matches lie (`img_05` matches 10,000 file
    names, all 40,000 rows down). Walking the key finds a word found everywhere in a few rows
    and a missing word only after reading them all (0.1 s at 100,000 rows; 3 s when the
    function ran per row); the index finds a rare or missing word at once but reads every
    match of a common one before sorting (0.2 s for a word in every row; scattered matches
    cost a page each, so 1,200 of them took 8 ms, as long as walking 7,000 rows).

    So both, in turn, each bounded. The walk reads SEARCH_WALK_ROWS rows at most (about
    1 ms). If it found some matches but not enough, and at the rate it found them the rest
    lie within SEARCH_WALK_MORE rows, a second walk goes on through those (stopping, as the
    first, once the page is full). Whatever is still missing comes from the index, below the
    rows walked: matches there are sparse, where the index is cheap.

    Each walk also returns the lowest id of the rows it walked (read in the same statement,
    so in the same snapshot), and the next step starts below it: rows committed between the
    statements (the API reads in autocommit), new ones or ones newly of the status, can
    neither show twice nor move the window past rows not walked yet. After a walk that found
    nothing, the index looks from the cursor down again: it reads matches only, so the rows
    walked cost it nothing.

    The index's statement is ordered by `id + 0`, which no index gives, so the planner
    cannot turn it into a walk again, nor combine the GIN index with a range of the key's
    (a bitmap of all 98,000 ids below a bound cost 8 ms): it reads the matches off the GIN
    index (with the status index too, where that is cheaper) and keeps the newest.
    """
    limit = parameters["limit"]
    status = parameters["status"]
    rows, lowest = _pg_walk(connection, before, status, SEARCH_WALK_ROWS, parameters)
    if lowest is not None and len(rows) < limit and (limit - len(rows)) * SEARCH_WALK_ROWS <= len(rows) * SEARCH_WALK_MORE:
        deeper = parameters | {"limit": limit - len(rows), "before_id": lowest}
        more, lowest_more = _pg_walk(connection, True, status, SEARCH_WALK_MORE, deeper)
        rows += more
        lowest = lowest_more if lowest_more is not None else lowest
    if len(rows) < limit:
        below = parameters if lowest is None else parameters | {"before_id": lowest}
        older = _pg_search_older(before or lowest is not None, status)
        rows += _fetch_all(connection, older, below | {"limit": limit - len(rows)})
    return rows


def _pg_walk(
    connection: Connection, before: bool, status: str | None, rows: int, parameters: dict[str, Any]
) -> tuple[list[dict[str, Any]], int | None]:
    """The matches among `rows` rows walked newest first, and the lowest id walked (None
    when nothing matched: then it is not read)."""
    found = _fetch_all(connection, _pg_search_walk(before, status, rows), parameters)
    lowest = None
    for row in found:
        lowest = row.pop(_WALKED_DOWN_TO)
    return found, lowest


# The status and the number of rows walked are written into the statements below, not passed
# as parameters: psycopg prepares a statement run five times, and PostgreSQL may then plan it
# once for any values (a generic plan). Knowing neither, that plan walked the key for any
# status, through 33,000 rows to find 2,000 failed ones (14 ms, against 1.3 ms through the
# (status, id) index).
_WALKED_DOWN_TO = "walked_down_to"


def _pg_status(query: Select, status: str | None) -> Select:
    if status is None:
        return query
    if status not in STATUSES:  # a plain word, so it needs no quoting
        raise ValueError(f"unknown status {status!r}")
    return query.where(images.c.status == literal_column(f"'{status}'"))


@lru_cache(maxsize=None)
def _pg_search_walk(before: bool, status: str | None, rows: int) -> Select:
    """The matches among the newest `rows` rows below the cursor (`before_id`), of the
    status, newest first, each with the lowest id of those rows.

    The rows are a subquery with a LIMIT, planned on its own: the key's index, or the
    (status, id) index, read backwards, `rows` rows at most, fewer once the page is full.
    The lowest id is a second such subquery, of ids only (an index-only read), which
    PostgreSQL runs once, and only if a match is found."""

    def newest(*columns: Any) -> Select:
        query = select(*columns).order_by(images.c.id.desc()).limit(literal_column(str(int(rows))))
        if before:
            query = query.where(images.c.id < bindparam("before_id"))
        return _pg_status(query, status)

    recent = newest(*_SUMMARY_COLUMNS, _SEARCH_WORDS.label(SEARCH_COLUMN)).subquery("recent")
    walked = newest(images.c.id).subquery("walked")
    return (
        select(
            *(recent.c[summary.name] for summary in _SUMMARY_COLUMNS),
            select(func.min(walked.c.id)).scalar_subquery().label(_WALKED_DOWN_TO),
        )
        .where(recent.c[SEARCH_COLUMN].op("@@")(_PG_QUERY))
        .order_by(recent.c.id.desc())
        .limit(bindparam("limit"))
    )


@lru_cache(maxsize=None)
def _pg_search_older(before: bool, status: str | None) -> Select:
    """The newest matches below `before_id`, off the index.

    Only the ids of the matches are sorted, and the page's rows then read by id: 10% less
    than carrying every match's columns through the sort (19 against 22 ms for `img_05`)."""
    unindexed_id = images.c.id + literal_column("0")
    newest = select(images.c.id).where(_PG_MATCHES).order_by(unindexed_id.desc()).limit(bindparam("limit"))
    if before:
        newest = newest.where(unindexed_id < bindparam("before_id"))
    newest = _pg_status(newest, status)
    return select(*_SUMMARY_COLUMNS).where(images.c.id.in_(newest.scalar_subquery())).order_by(images.c.id.desc())


# The daemon writes its heartbeat every 5 s (daemon.service.HEARTBEAT_S): one older than two
# of them means it is not running (killed, hung, or unable to write the database).
HEARTBEAT_STALE_S = 10.0


@dataclass(frozen=True)
class DaemonStatus:
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    caption_model: str | None
    caption_device: str | None
    caption_runtime: str | None
    caption_status: str | None
    problem: str | None = None  # a fault of the environment it is waiting out
    stopped_at: datetime | None = None  # when it stopped cleanly; None while it runs

    def heartbeat_age_s(self, now: datetime) -> float:
        """Seconds since the last heartbeat; `now` is naive UTC, as stored."""
        return (now - self.heartbeat_at).total_seconds()

    def state(self, now: datetime, lease_s: float | None = None) -> str:
        """"running"; "stopped" (a clean stop); "stale": no heartbeat for two of them (killed,
        hung, or unable to write the database); "gone": none for longer than a claim's lease
        (pipeline.lease_s), so its images have gone back to the others. Without `lease_s`,
        never "gone"."""
        if self.stopped_at is not None:
            return "stopped"
        age = self.heartbeat_age_s(now)
        if lease_s is not None and age > lease_s:
            return "gone"
        return "stale" if age > HEARTBEAT_STALE_S else "running"


# The daemon to report: a running one if any (newest heartbeat first), else the last to stop.
_LATEST_DAEMON = (
    select(daemon_state)
    .order_by(daemon_state.c.stopped_at.is_(None).desc(), daemon_state.c.heartbeat_at.desc())
    .limit(1)
)


def daemon_status(connection: Connection) -> DaemonStatus | None:
    """The daemon process that says most about the service: one running, else the last one.
    With several (a fleet), `workers` lists them all."""
    row = connection.execute(_LATEST_DAEMON).mappings().first()
    if row is None:
        return None
    return _daemon_status(row)


def _daemon_status(row: RowMapping) -> DaemonStatus:
    return DaemonStatus(
        pid=row["pid"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
        caption_model=row["caption_model"],
        caption_device=row["caption_device"],
        caption_runtime=row["caption_runtime"],
        caption_status=row["caption_status"],
        problem=row["problem"],
        stopped_at=row["stopped_at"],
    )


def watch_lapsed_s(connection: Connection, now: datetime) -> float | None:
    """How long ago the watch lease ran out unrenewed while a daemon still held it (its
    watcher froze or died without a clean stop): no one registers files then. None while it
    is current, or no one holds it (a clean stop gives it back)."""
    row = connection.execute(select(watch_lease.c.holder, watch_lease.c.lease_until)).first()
    if row is None or row.holder is None or row.lease_until is None or row.lease_until >= now:
        return None
    return (now - row.lease_until).total_seconds()


def superuser_role(connection: Connection) -> str | None:
    """The role connected, if it is a PostgreSQL superuser: its connections may take the slots
    the server keeps for administrators (superuser_reserved_connections). None otherwise."""
    if connection.dialect.name != "postgresql":
        return None
    role, superuser = connection.execute(select(func.current_user(), func.current_setting("is_superuser"))).one()
    return role if superuser == "on" else None


def schema_revision(connection: Connection) -> str | None:
    """The Alembic revision the database is at (None: not created yet)."""
    return MigrationContext.configure(connection).get_current_revision()


def data_version(connection: Connection) -> int | str | None:
    """A value that stays the same while nothing is written: callers may keep what they read
    as long as it does not change. None where no such value is known (callers read afresh).

    SQLite: its counter of commits made by other connections, comparable only with what the
    same connection said before. PostgreSQL: the server's current snapshot, as text
    (`xmin:xmax:in-progress ids`), the same on every connection. Its xmax moves on when a
    transaction takes an id, which a write does and a read does not, and a transaction that
    ends leaves the in-progress list or moves xmin: so an equal snapshot means no commit
    since (one of any database of the server changes it too, which only costs a re-read).
    """
    dialect = connection.dialect.name
    if dialect == "sqlite":
        return connection.exec_driver_sql("PRAGMA data_version").scalar_one()
    if dialect == "postgresql":
        return connection.exec_driver_sql("SELECT pg_current_snapshot()::text").scalar_one()
    return None


def health(
    connection: Connection, schema_head: str, now: datetime
) -> tuple[str | None, DaemonStatus | None, float | None]:
    """The schema revision, the daemon's last heartbeat (None before it first ran, or when the
    schema is not `schema_head`, whose columns the read expects), and how long ago the watch
    lease lapsed with no one to take it (watch_lapsed_s)."""
    revision = schema_revision(connection)
    if revision != schema_head:
        return revision, None, None
    return revision, daemon_status(connection), watch_lapsed_s(connection, now)


# -- statistics -------------------------------------------------------------------------------

STAGES = ("hash", "metadata", "thumbnails", "caption")

_TOTALS = select(image_totals)
_DONE_MS = images.c.processing_ms
# How many done images have a time, as image_totals says, in the statement that reads the
# percentiles: the ranks and the index they are read from then come from one snapshot, even
# where each statement is a transaction of its own (the API's PostgreSQL reader).
_TIMED = func.coalesce(
    select(image_totals.c.n_processing).where(image_totals.c.status == "done").scalar_subquery(), 0
)


def _percentile(percent: int) -> Any:
    """Nearest-rank percentile of the done images' processing_ms, read off the index as a
    scalar subquery: the value at rank ceil(percent / 100 * n), in integers.

    OFFSET walks the index, so the high percentiles are read from the top end: p95 of 100,000
    rows steps over 5,000 entries, not 95,000. (Division truncates toward zero on both
    databases, so no offset is negative, even for n = 0: the subquery is then NULL.)
    """
    times = select(_DONE_MS).where(images.c.status == "done", _DONE_MS.is_not(None)).limit(1)
    if percent <= 50:  # rank - 1 = ceil(p n / 100) - 1 = floor((p n - 1) / 100)
        return times.order_by(_DONE_MS.asc()).offset((percent * _TIMED - 1) // 100).scalar_subquery()
    # n - rank, counted from the top
    return times.order_by(_DONE_MS.desc()).offset(_TIMED - (percent * _TIMED + 99) // 100).scalar_subquery()


_PERCENTILES = select(_percentile(50), _percentile(95))
_PROCESSED_SINCE = select(func.count()).where(images.c.processed_at >= bindparam("since"))


@dataclass(frozen=True)
class Worker:
    """A daemon process, as /api/stats lists it."""

    id: int
    name: str  # host:pid, as records' processed_by say
    roles: str | None
    status: DaemonStatus
    holding: int  # images it has claimed right now
    processed_last_hour: int
    caption_batches: str | None = None  # what it has captioned, as models.caption_batches' JSON


# Workers shown: those not stopped that were heard from within this long.
WORKERS_SHOWN_S = 3600


def workers(connection: Connection, *, now: datetime) -> list[Worker]:
    """The daemon processes alive or lately heard from, with what each holds and has done."""
    since = now - timedelta(seconds=WORKERS_SHOWN_S)
    rows = connection.execute(
        select(daemon_state)
        .where(daemon_state.c.stopped_at.is_(None), daemon_state.c.heartbeat_at >= since)
        .order_by(daemon_state.c.id)
    ).mappings().all()
    if not rows:
        return []
    holding = dict(
        connection.execute(
            select(images.c.claimed_by, func.count()).where(images.c.status == "processing").group_by(images.c.claimed_by)
        ).all()
    )
    processed = dict(
        connection.execute(
            select(images.c.processed_by, func.count())
            .where(images.c.processed_at >= now - timedelta(hours=1))
            .group_by(images.c.processed_by)
        ).all()
    )
    found = []
    for row in rows:
        name = f"{row['host']}:{row['pid']}"
        found.append(
            Worker(
                row["id"],
                name,
                row["roles"],
                _daemon_status(row),
                holding.get(row["id"], 0),
                processed.get(name, 0),
                row["caption_batches"],
            )
        )
    return found


@dataclass(frozen=True)
class Stats:
    by_status: dict[str, int]
    # Times are those of `done` images: a file rejected in a millisecond says nothing about
    # how long making a record takes.
    average_ms: float
    p50_ms: float
    p95_ms: float
    stage_average_ms: dict[str, float]
    processed_last_hour: int
    caption_model: str | None
    caption_device: str | None
    caption_runtime: str | None
    problem: str | None = None  # what the daemon is waiting out, as it last said
    workers: tuple[Worker, ...] = ()
    caption_status: str | None = None  # the daemon's: "loading", "ready (...)", "unavailable: <reason>"
    uncaptioned: int = 0  # done images the model never ran on (missing, failed): recaption --missing's

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def finished(self) -> int:
        return self.by_status["done"] + self.by_status["failed"]

    @property
    def queue_depth(self) -> int:
        return self.by_status["pending"] + self.by_status["processing"]


def _average(totals: RowMapping | None, name: str) -> float:
    if totals is None or not totals[f"n_{name}"]:
        return 0.0
    return totals[f"s_{name}"] / totals[f"n_{name}"]


def _status_totals(connection: Connection) -> tuple[dict[str, int], dict[str, RowMapping]]:
    """Images by status (every status, zeros included), and the `image_totals` row of each."""
    by_status = dict.fromkeys(STATUSES, 0)
    totals: dict[str, RowMapping] = {}
    for row in connection.execute(_TOTALS).mappings():
        totals[row["status"]] = row
        by_status[row["status"]] = row["images"]
    return by_status, totals


def stats(connection: Connection, *, now: datetime) -> Stats:
    """Counts, timings and throughput; zeros for an empty database. `now` is naive UTC.

    Counts and sums come from `image_totals` (kept by triggers); the percentiles and the last
    hour's count are index range reads. Nothing here reads the images table row by row.
    """
    by_status, totals = _status_totals(connection)
    done = totals.get("done")
    p50, p95 = connection.execute(_PERCENTILES).one() if done and done["n_processing"] else (None, None)
    state = daemon_status(connection)
    return Stats(
        by_status=by_status,
        average_ms=_average(done, "processing"),
        p50_ms=float(p50 or 0.0),
        p95_ms=float(p95 or 0.0),
        stage_average_ms={stage: _average(done, stage) for stage in STAGES},
        processed_last_hour=connection.execute(_PROCESSED_SINCE, {"since": now - timedelta(hours=1)}).scalar_one(),
        caption_model=state.caption_model if state else None,
        caption_device=state.caption_device if state else None,
        caption_runtime=state.caption_runtime if state else None,
        problem=state.problem if state and state.stopped_at is None else None,
        workers=tuple(workers(connection, now=now)),
        caption_status=state.caption_status if state and state.stopped_at is None else None,
        uncaptioned=(done["images"] - done["n_caption"]) if done else 0,
    )


# Upper bounds (seconds) of the duration histograms of /metrics.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class Durations:
    """A histogram of durations: how many are at most each of DURATION_BUCKETS_S, cumulative."""

    buckets: tuple[int, ...]
    count: int
    sum_s: float


@dataclass(frozen=True)
class Metrics:
    by_status: dict[str, int]
    waiting: dict[str, int]  # pending images by what they wait for: "prepare" or "caption"
    durations: dict[str, Durations]  # "processing" and each of STAGES, over done images
    workers: list[Worker]


def _durations_of_done(connection: Connection) -> dict[str, Durations]:
    """One pass over the done images: a count per bucket for every timed column."""
    names = ("processing", *STAGES)
    columns = []
    for name in names:
        timed = images.c[f"{name}_ms"]
        columns += [func.count(timed), func.coalesce(func.sum(timed), 0.0)]
        columns += [func.coalesce(func.sum(case((timed <= bound * 1000, 1), else_=0)), 0) for bound in DURATION_BUCKETS_S]
    row = connection.execute(select(*columns).where(images.c.status == "done")).one()
    width = 2 + len(DURATION_BUCKETS_S)
    found = {}
    for index, name in enumerate(names):
        count, total_ms, *buckets = row[index * width : (index + 1) * width]
        found[name] = Durations(tuple(int(n) for n in buckets), int(count), float(total_ms) / 1000)
    return found


def metrics(connection: Connection, *, now: datetime) -> Metrics:
    """What /metrics reports. Unlike `stats`, this reads every done image (the histograms):
    tens of milliseconds at 100,000 images, for a scrape every few seconds at most."""
    by_status, _ = _status_totals(connection)
    waiting = {"prepare": 0, "caption": 0}
    # The caption stage's images are done already, their caption still to come.
    queued = (
        select(images.c.stage, func.count())
        .where(or_(and_(images.c.status == "pending", images.c.stage.is_(None)), and_(images.c.status == "done", images.c.stage == "caption")))
        .group_by(images.c.stage)
    )
    for stage, count in connection.execute(queued):
        waiting[stage or "prepare"] = count
    return Metrics(by_status, waiting, _durations_of_done(connection), workers(connection, now=now))
