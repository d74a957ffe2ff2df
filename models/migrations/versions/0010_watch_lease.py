"""watch_lease: who watches the inbox, held by a lease its holder renews

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

The watch was held by a session advisory lock (an flock on SQLite), which lasts as long as the
holder's session, not as long as it works: a frozen holder (SIGSTOP, a hung machine) kept it,
and the inbox was no one's. One row: the daemon_state id that watches, and until when.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "watch_lease",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("holder", sa.Integer(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
    )
    op.bulk_insert(table, [{"id": 1, "holder": None, "lease_until": None}])


def downgrade() -> None:
    op.drop_table("watch_lease")
