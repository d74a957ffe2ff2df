"""What the read queries share: the tables, the columns a client may see, and statements run
on the DBAPI cursor.

Every SQL statement the API runs is in the models.*_reads modules; api/ holds none. Each of
their functions takes an open connection (the API's is read-only) and returns plain values.
Statistics are SQL aggregates over indexes: no function loads a table into Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, Select, Text, cast

from models.tables import DaemonState, Image, ImageTotals, WatchLease

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
RECORD_COLUMNS = [
    cast(column, Text).label("exif") if column.name == "exif" else column
    for column in images.c
    if column.name not in _INTERNAL_COLUMNS
]
# What a list item shows (a gallery tile: name, status, caption or why there is none, and
# whether there is a thumbnail; the error's kind says whether a retry can help), plus the
# digest uploads look duplicates up by.
SUMMARY_COLUMNS = [
    images.c.id,
    images.c.filename,
    images.c.status,
    images.c.received_at,
    images.c.sha256,
    images.c.error,
    images.c.error_kind,
    images.c.caption,
    images.c.caption_error,
    images.c.stage,
    images.c.thumb_small_path,
    images.c.thumb_medium_path,
]


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


def fetch_all(connection: Connection, statement: Select, parameters: dict[str, Any]) -> list[dict[str, Any]]:
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


def fetch_one(connection: Connection, statement: Select, parameters: dict[str, Any]) -> dict[str, Any] | None:
    """The first row of `statement` (as fetch_all), or None."""
    rows = fetch_all(connection, statement, parameters)
    return rows[0] if rows else None
