"""Alembic environment: runs on the connection handed over by models.migrate."""

from alembic import context

from models.tables import Base, is_schema_object

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
    include_name=is_schema_object,  # the FTS5 search index is made by hand (0003)
)
with context.begin_transaction():
    context.run_migrations()
