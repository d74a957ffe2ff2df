"""Searching images by words in their file names and captions, over the search index of
migration 0003: FTS5 on SQLite, a tsvector on PostgreSQL (where a search is a walk of the
newest rows, then the index: pg_search says why). models.image_reads.list_images runs them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Integer, Select, Text, bindparam, column, func, literal_column, select, table
from sqlalchemy.dialects.postgresql import ARRAY

from models.reads import SUMMARY_COLUMNS, fetch_all, images
from models.tables import SEARCH_COLUMN, SEARCH_TABLE, STATUSES

# The search index of migration 0003, for the statements only: it is not in the metadata.
# SQLite: the FTS5 table. PostgreSQL: the tsvector column and the function making its queries.
FTS5_TABLE = table(SEARCH_TABLE, column("rowid", Integer))
FTS5_MATCHES = literal_column(SEARCH_TABLE).op("MATCH")(bindparam("match"))
_SEARCH_WORDS = literal_column(f"images.{SEARCH_COLUMN}")
# The tsquery as a scalar subquery: PostgreSQL computes it once per statement, whatever the
# plan. A bare call is computed once only where the planner folds it into a constant (a
# custom plan of the IMMUTABLE function); in a generic plan, or filtering the rows of a walk,
# it ran for every row: 27 microseconds each, 2.7 s for a word found nowhere in 100,000 rows.
_PG_QUERY = select(func.htx_search_query(bindparam("words", type_=ARRAY(Text)))).scalar_subquery()
PG_MATCHES = _SEARCH_WORDS.op("@@")(_PG_QUERY)
MAX_SEARCH_TERMS = 16
# PostgreSQL: the newest rows a search walks before it asks the index for the older matches,
# and how many more a second walk may read when the first found some (pg_search says why).
# About 1 microsecond a row, measured at 100,000 rows.
SEARCH_WALK_ROWS = 1000
SEARCH_WALK_MORE = 8000


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


def pg_search(connection: Connection, parameters: dict[str, Any], before: bool) -> list[dict[str, Any]]:
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
        rows += fetch_all(connection, older, below | {"limit": limit - len(rows)})
    return rows


def _pg_walk(
    connection: Connection, before: bool, status: str | tuple[str, ...] | None, rows: int, parameters: dict[str, Any]
) -> tuple[list[dict[str, Any]], int | None]:
    """The matches among `rows` rows walked newest first, and the lowest id walked (None
    when nothing matched: then it is not read)."""
    found = fetch_all(connection, _pg_search_walk(before, status, rows), parameters)
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


def _pg_status(query: Select, status: str | tuple[str, ...] | None) -> Select:
    """Of one status, or of any of several (models.image_reads.statuses_of)."""
    if status is None:
        return query
    statuses = (status,) if isinstance(status, str) else status
    for name in statuses:
        if name not in STATUSES:  # a plain word, so it needs no quoting
            raise ValueError(f"unknown status {name!r}")
    if len(statuses) == 1:
        return query.where(images.c.status == literal_column(f"'{statuses[0]}'"))
    return query.where(images.c.status.in_([literal_column(f"'{name}'") for name in statuses]))


@lru_cache(maxsize=None)
def _pg_search_walk(before: bool, status: str | tuple[str, ...] | None, rows: int) -> Select:
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

    recent = newest(*SUMMARY_COLUMNS, _SEARCH_WORDS.label(SEARCH_COLUMN)).subquery("recent")
    walked = newest(images.c.id).subquery("walked")
    return (
        select(
            *(recent.c[summary.name] for summary in SUMMARY_COLUMNS),
            select(func.min(walked.c.id)).scalar_subquery().label(_WALKED_DOWN_TO),
        )
        .where(recent.c[SEARCH_COLUMN].op("@@")(_PG_QUERY))
        .order_by(recent.c.id.desc())
        .limit(bindparam("limit"))
    )


@lru_cache(maxsize=None)
def _pg_search_older(before: bool, status: str | tuple[str, ...] | None) -> Select:
    """The newest matches below `before_id`, off the index.

    Only the ids of the matches are sorted, and the page's rows then read by id: 10% less
    than carrying every match's columns through the sort (19 against 22 ms for `img_05`)."""
    unindexed_id = images.c.id + literal_column("0")
    newest = select(images.c.id).where(PG_MATCHES).order_by(unindexed_id.desc()).limit(bindparam("limit"))
    if before:
        newest = newest.where(unindexed_id < bindparam("before_id"))
    newest = _pg_status(newest, status)
    return select(*SUMMARY_COLUMNS).where(images.c.id.in_(newest.scalar_subquery())).order_by(images.c.id.desc())
