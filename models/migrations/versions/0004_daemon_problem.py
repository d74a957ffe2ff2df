"""daemon state: what the daemon is waiting out, and when it stopped cleanly

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

`problem` names a fault of the environment the daemon is waiting out ("data disk full",
"database unavailable"), so /healthz and /api/stats can say what is wrong instead of "ok".
`stopped_at` is written by a clean stop, so a stopped daemon shows as stopped at once rather
than as running until its heartbeat goes stale.

Plain column additions: SQLite adds them in place, so the triggers of 0002 and 0003 stay.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("daemon_state", sa.Column("problem", sa.Text(), nullable=True))
    op.add_column("daemon_state", sa.Column("stopped_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("daemon_state") as batch:
        batch.drop_column("stopped_at")
        batch.drop_column("problem")
