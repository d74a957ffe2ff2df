"""initial schema: images and daemon_state

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_kind", sa.String(length=16), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=True),
        sa.Column("inbox_path", sa.Text(), nullable=True),
        sa.Column("stored_path", sa.Text(), nullable=True),
        sa.Column("format", sa.String(length=8), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("exif", sa.JSON(), nullable=True),
        sa.Column("taken_at", sa.String(length=32), nullable=True),
        sa.Column("camera_make", sa.Text(), nullable=True),
        sa.Column("camera_model", sa.Text(), nullable=True),
        sa.Column("gps_latitude", sa.Float(), nullable=True),
        sa.Column("gps_longitude", sa.Float(), nullable=True),
        sa.Column("icc_profile", sa.Text(), nullable=True),
        sa.Column("thumb_small_path", sa.Text(), nullable=True),
        sa.Column("thumb_small_width", sa.Integer(), nullable=True),
        sa.Column("thumb_small_height", sa.Integer(), nullable=True),
        sa.Column("thumb_medium_path", sa.Text(), nullable=True),
        sa.Column("thumb_medium_width", sa.Integer(), nullable=True),
        sa.Column("thumb_medium_height", sa.Integer(), nullable=True),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.Column("caption_model", sa.Text(), nullable=True),
        sa.Column("caption_device", sa.String(length=32), nullable=True),
        sa.Column("caption_error", sa.Text(), nullable=True),
        sa.Column("hash_ms", sa.Float(), nullable=True),
        sa.Column("metadata_ms", sa.Float(), nullable=True),
        sa.Column("thumbnails_ms", sa.Float(), nullable=True),
        sa.Column("caption_ms", sa.Float(), nullable=True),
        sa.Column("processing_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("sha256", name=op.f("uq_images_sha256")),
    )
    op.create_index("ix_images_status_id", "images", ["status", "id"])
    op.create_index("ix_images_processed_at", "images", ["processed_at"])
    op.create_table(
        "daemon_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("caption_model", sa.Text(), nullable=True),
        sa.Column("caption_device", sa.String(length=32), nullable=True),
        sa.Column("caption_status", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daemon_state")),
    )


def downgrade() -> None:
    op.drop_table("daemon_state")
    op.drop_index("ix_images_processed_at", table_name="images")
    op.drop_index("ix_images_status_id", table_name="images")
    op.drop_table("images")
