"""search by meaning: the embeddings of captions, one row per image and search model

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

`image_embeddings` holds a float16 vector per image and model (search.model); `seq` grows with
every row written, so the API's in-memory index reads only what is new. An embedding is of a
caption: a trigger removes an image's rows when its caption changes (a recaption, a reprocess)
and when the image is deleted, and the daemon embeds the new caption. A partial index on the
done images with a caption is what the daemon walks to find those waiting.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

CAPTIONED = "status = 'done' AND caption IS NOT NULL"

_SQLITE_TRIGGERS = (
    """
    CREATE TRIGGER image_embeddings_caption AFTER UPDATE OF caption ON images
    WHEN OLD.caption IS NOT NEW.caption
    BEGIN DELETE FROM image_embeddings WHERE image_id = OLD.id; END
    """,
    """
    CREATE TRIGGER image_embeddings_delete AFTER DELETE ON images
    BEGIN DELETE FROM image_embeddings WHERE image_id = OLD.id; END
    """,
)
_PG_FUNCTION = """
    CREATE OR REPLACE FUNCTION image_embeddings_forget() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM image_embeddings WHERE image_id = OLD.id;
        RETURN NULL;
    END
    $$
"""
_PG_TRIGGERS = (
    """
    CREATE TRIGGER image_embeddings_caption AFTER UPDATE OF caption ON images
    FOR EACH ROW WHEN (OLD.caption IS DISTINCT FROM NEW.caption) EXECUTE FUNCTION image_embeddings_forget()
    """,
    """
    CREATE TRIGGER image_embeddings_delete AFTER DELETE ON images
    FOR EACH ROW EXECUTE FUNCTION image_embeddings_forget()
    """,
)


def upgrade() -> None:
    op.create_table(
        "image_embeddings",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("embedded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_image_embeddings")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_image_embeddings_image_model", "image_embeddings", ["image_id", "model"], unique=True)
    op.create_index("ix_image_embeddings_model_seq", "image_embeddings", ["model", "seq"])
    op.create_index(
        "ix_images_captioned", "images", ["id"], sqlite_where=sa.text(CAPTIONED), postgresql_where=sa.text(CAPTIONED)
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for trigger in _PG_TRIGGERS:
            op.execute(trigger)
    else:
        for trigger in _SQLITE_TRIGGERS:
            op.execute(trigger)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS image_embeddings_caption ON images" if _pg() else "DROP TRIGGER IF EXISTS image_embeddings_caption")
    op.execute("DROP TRIGGER IF EXISTS image_embeddings_delete ON images" if _pg() else "DROP TRIGGER IF EXISTS image_embeddings_delete")
    if _pg():
        op.execute("DROP FUNCTION IF EXISTS image_embeddings_forget()")
    op.drop_index("ix_images_captioned", table_name="images")
    op.drop_table("image_embeddings")


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"
