"""images: a stored key to list them by when each photo was taken

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-09

`GET /api/images?order=taken` lists the newest capture first: the EXIF time (`taken_at`),
else the arrival (`received_at`), ties by id, newest first. An expression of the two could
not be read off an index in that order, so each page would sort every row of the table.
`sort_taken` holds the key itself, ISO 8601 text to the second ("2024-05-01T12:00:00", the
form `taken_at` has), so the two kinds of time compare as text; with indexes on
(sort_taken, id) and (status, sort_taken, id) a page is a range of one of them.
models.tables.sort_key is its value; the daemon sets it with the row and again when it records
the metadata. Existing rows get it here, from the same two columns.

A plain column addition (NOT NULL, with '' as the default for a row written by hand): SQLite
adds it in place, so the triggers of 0002 and 0003 stay, and neither watches it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# `received_at` as models.tables.sort_key writes it, per database: SQLite keeps a DateTime as
# text ("2026-12-09 10:11:12.123456").
RECEIVED = {
    "sqlite": "strftime('%Y-%m-%dT%H:%M:%S', received_at)",
    "postgresql": """to_char(received_at, 'YYYY-MM-DD"T"HH24:MI:SS')""",
}


def upgrade() -> None:
    op.add_column("images", sa.Column("sort_taken", sa.String(length=32), server_default="", nullable=False))
    received = RECEIVED[op.get_bind().dialect.name]
    op.execute(f"UPDATE images SET sort_taken = COALESCE(taken_at, {received})")
    op.create_index("ix_images_sort_taken", "images", ["sort_taken", "id"])
    op.create_index("ix_images_status_sort_taken", "images", ["status", "sort_taken", "id"])


def downgrade() -> None:
    op.drop_index("ix_images_status_sort_taken", table_name="images")
    op.drop_index("ix_images_sort_taken", table_name="images")
    # In place (SQLite 3.35+), as 0007 does: a batch operation would copy `images` and lose
    # the triggers of 0002 and 0003.
    op.execute("ALTER TABLE images DROP COLUMN sort_taken")
