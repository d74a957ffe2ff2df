"""statistics: PostgreSQL's totals trigger makes the row of a new status only when it is missing

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

The trigger of 0002 ran INSERT ... ON CONFLICT DO NOTHING before each update of a total, to
make the row of a status seen for the first time: a speculative insertion on every change of
every image, though the row is missing only the first time. Now the update runs first, and
the insertion only if it found no row. Every claim and every outcome fires this trigger: with
two workers claiming and finishing no-op work, about 5 % more claims a second
(bench/work_queue.py). The totals and the SQLite triggers are as they were.
"""

import importlib

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The SET clauses of 0002, which is never edited: the same sums, the same columns.
_stats = importlib.import_module("models.migrations.versions.0002_stats")


def _function(body: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION image_totals_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                UPDATE image_totals SET {_stats._change('OLD', '-', '({})::int')} WHERE status = OLD.status;
            END IF;
            IF TG_OP IN ('UPDATE', 'INSERT') THEN
                {body}
            END IF;
            RETURN NULL;
        END
        $$
        """


_ADD = f"UPDATE image_totals SET {_stats._change('NEW', '+', '({})::int')} WHERE status = NEW.status;"
_MAKE_ROW = "INSERT INTO image_totals (status) VALUES (NEW.status) ON CONFLICT (status) DO NOTHING;"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function(f"{_ADD} IF NOT FOUND THEN {_MAKE_ROW} {_ADD} END IF;"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function(f"{_MAKE_ROW} {_ADD}"))
