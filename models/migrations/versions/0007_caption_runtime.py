"""captions: which runtime and precision made each caption, and which each daemon runs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

`caption_runtime` ("openvino bfloat16", "torch int8") sits beside `caption_model` and
`caption_device`: the same model gives different captions in another precision or runtime,
so a caption says which made it, and a daemon's heartbeat which it runs.

Plain column additions: SQLite adds them in place, so the triggers of 0002 and 0003 stay.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("caption_runtime", sa.String(length=32), nullable=True))
    op.add_column("daemon_state", sa.Column("caption_runtime", sa.String(length=32), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN in place (SQLite 3.35+), as 0005 does: a batch operation
    # would copy `images` and lose the triggers of 0002 and 0003.
    for table in ("daemon_state", "images"):
        op.execute(f"ALTER TABLE {table} DROP COLUMN caption_runtime")
