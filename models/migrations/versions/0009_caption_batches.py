"""daemon_state: the caption batches each daemon has run, for the API's /metrics

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

A daemon counts its caption batches by size and duration (models/caption_batches.py) and
writes the counts, as JSON, with each heartbeat. A plain column addition.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("daemon_state", sa.Column("caption_batches", sa.Text(), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE daemon_state DROP COLUMN caption_batches")
