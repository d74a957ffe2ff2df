"""images: an id is never given twice, now that images can be deleted

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

SQLite gives a new row the largest id in the table plus one, so deleting the newest image
(DELETE /api/images/{id}) would hand its id to the next one, and whatever a client kept of
the old id (its thumbnails are served as immutable) would show the wrong image. AUTOINCREMENT
makes SQLite remember the largest id ever used instead. It can only be declared when a table
is made: `images` is made again with it, the rows copied with their ids, and its indexes and
the triggers of 0002 and 0003 made again from their own SQL. (Dropping the old table drops
its triggers before anything else, so none fires.) PostgreSQL's sequences never go back:
nothing to do there.
"""

import re

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PLAIN = "id INTEGER NOT NULL,"
AUTOINCREMENT = "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,"


def _remake_images(change) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    schema = bind.exec_driver_sql("SELECT type, sql FROM sqlite_master WHERE tbl_name = 'images' AND sql IS NOT NULL").all()
    [table_sql] = [sql for kind, sql in schema if kind == "table"]
    rest = [sql for kind, sql in schema if kind in ("index", "trigger")]
    columns = ", ".join(row[1] for row in bind.exec_driver_sql("PRAGMA table_info(images)"))
    # (A table renamed into place has its name quoted in its SQL.)
    new_sql = re.sub(r'^CREATE TABLE "?images"? ', "CREATE TABLE images_remade ", change(table_sql), count=1)
    op.execute(new_sql)
    op.execute(f"INSERT INTO images_remade ({columns}) SELECT {columns} FROM images")
    op.execute("DROP TABLE images")
    op.execute("ALTER TABLE images_remade RENAME TO images")
    for sql in rest:
        op.execute(sql)


# The table's primary key as 0001 made it: a constraint after the columns.
PRIMARY_KEY = re.compile(r"\s*CONSTRAINT pk_images PRIMARY KEY \(id\),")
# Without AUTOINCREMENT again: the same key, declared on the column (SQLite allows no other way
# back but this, and it means the same).
PLAIN_KEY = "id INTEGER NOT NULL CONSTRAINT pk_images PRIMARY KEY,"


def _with_autoincrement(table_sql: str) -> str:
    if PLAIN_KEY in table_sql:  # downgraded from this revision before
        return table_sql.replace(PLAIN_KEY, AUTOINCREMENT, 1)
    assert PLAIN in table_sql and PRIMARY_KEY.search(table_sql), table_sql
    return PRIMARY_KEY.sub("", table_sql.replace(PLAIN, AUTOINCREMENT, 1), count=1)


def _without_autoincrement(table_sql: str) -> str:
    assert AUTOINCREMENT in table_sql, table_sql
    return table_sql.replace(AUTOINCREMENT, PLAIN_KEY, 1)


def upgrade() -> None:
    _remake_images(_with_autoincrement)


def downgrade() -> None:
    _remake_images(_without_autoincrement)
