"""caption queue: images waiting only for their caption are done

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

An image whose metadata and thumbnails are recorded, its caption left to the caption stage
(another worker, a model still being prepared, a recaption), was `pending` until captioned,
and looked unprocessed. It is `done` now, with `stage = 'caption'` saying its caption is to
come; a partial index keeps that queue's head as cheap to find as the pipeline's.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

QUEUE = "status = 'done' AND stage = 'caption'"


def upgrade() -> None:
    op.execute("UPDATE images SET status = 'done' WHERE status = 'pending' AND stage = 'caption'")
    op.create_index(
        "ix_images_caption_queue", "images", ["id"], sqlite_where=sa.text(QUEUE), postgresql_where=sa.text(QUEUE)
    )


def downgrade() -> None:
    op.drop_index("ix_images_caption_queue", table_name="images")
    op.execute("UPDATE images SET status = 'pending' WHERE status = 'done' AND stage = 'caption'")
