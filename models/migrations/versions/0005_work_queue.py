"""work queue: claims with leases on images, one daemon_state row per worker process

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

The database is the queue (daemon/database/work_queue.py). A worker claims a pending image by setting
`claimed_by` (its daemon_state row) and `lease_until`, renews the lease while it works, and
commits the outcome only while it still holds the claim. A claim whose lease runs out (its
worker died) goes back to pending with `attempts` raised; `stage` says what is left to do
("caption" after a thumbnails-only worker; NULL: everything). `source_identity` is the inbox
file's inode, size and modification time when it was hashed, so whichever worker takes the
image can tell whether the file still holds those bytes. `processed_by` names the worker
(host:pid) that recorded the outcome.

daemon_state had one row (id 1); now each daemon process keeps its own, with its host and
roles, and its id is its worker id. On PostgreSQL the id sequence moves past the old row.

Plain column additions: SQLite adds them in place, so the triggers of 0002 and 0003 stay.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.add_column("images", sa.Column("claimed_by", sa.Integer(), nullable=True))
    op.add_column("images", sa.Column("lease_until", sa.DateTime(), nullable=True))
    op.add_column("images", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("images", sa.Column("stage", sa.String(length=16), nullable=True))
    op.add_column("images", sa.Column("source_identity", sa.String(length=64), nullable=True))
    op.add_column("images", sa.Column("processed_by", sa.Text(), nullable=True))
    op.add_column("daemon_state", sa.Column("host", sa.Text(), nullable=True))
    op.add_column("daemon_state", sa.Column("roles", sa.Text(), nullable=True))
    # The queue's head: claims read it in id order and stop after a few rows, whatever the
    # size of the table and however many rows are done.
    op.create_index("ix_images_pending", "images", ["id"], sqlite_where=PENDING, postgresql_where=PENDING)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "SELECT setval(pg_get_serial_sequence('daemon_state', 'id'), "
            "(SELECT coalesce(max(id), 0) + 1 FROM daemon_state), false)"
        )


def downgrade() -> None:
    op.drop_index("ix_images_pending", table_name="images")
    # ALTER TABLE ... DROP COLUMN in place (SQLite 3.35+): a batch operation would copy
    # `images` and lose the triggers of 0002 and 0003.
    for name in ("roles", "host"):
        op.execute(f"ALTER TABLE daemon_state DROP COLUMN {name}")
    for name in ("processed_by", "source_identity", "stage", "attempts", "lease_until", "claimed_by"):
        op.execute(f"ALTER TABLE images DROP COLUMN {name}")
