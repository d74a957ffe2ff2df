"""search: an FTS5 index over file names and captions (and status), kept by triggers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

`GET /api/images?q=` must stay fast at 100,000 images, which a `LIKE '%word%'` scan of the
table does not (it reads every row). `images_search` is an FTS5 table with external content
(`images` itself): it stores only the index, not a second copy of the text. Triggers inside
the daemon's own write transactions keep it exact, so the writer needs no change, and rows
that exist before this migration are indexed by its 'rebuild'.

The tokenizer folds case and diacritics ("cafe" finds "Café") and splits on punctuation, so a
file name's parts are words: "IMG_0042.jpg" is found by "img", "0042" or "img_0042".

`status` is indexed too, so a search within one status is an intersection inside the index.
Filtering the index's matches against `images.status` instead costs a row read per match:
measured at 100,000 rows, a word found in every caption with `status=failed` (none of them)
took 45 to 80 ms that way and 9 ms this way. The price is an index update on each change of
status, a few per image, in transactions the daemon makes anyway.

SQLite keeps the index in shadow tables (images_search_data, _idx, _docsize, _config), which
are not in models/tables.py: models.tables.is_schema_object leaves them out of comparisons.
A later migration that rebuilds `images` (Alembic's batch mode copies the table) drops its
triggers with it and must create them again, as it must those of 0002.

PostgreSQL (14 or newer): a stored generated column `search_words`, the `tsvector` of the file
name and the caption, with a GIN index. Both sides of a match go through one function,
`htx_search_words`: `unaccent` folds diacritics, ASCII punctuation becomes spaces (so
"IMG_0042.jpg" is the words img, 0042 and jpg, as FTS5's tokenizer has it, and never a
"file" or "host" token of PostgreSQL's parser), and the `simple` configuration folds case
without stemming. `htx_search_query` turns a search's words into the same query FTS5 gets:
each word a phrase of its tokens, the last a prefix, all words required. It is IMMUTABLE, as
`htx_search_words` is (the same `unaccent` dictionary and the `simple` configuration, named
in its body): a plan with the words known computes it once, as a constant. The status filter
is a plain condition. The planner cannot judge from the column's statistics whether to read
the GIN index (rare words) or walk the primary key newest first (words found everywhere): a
prefix query is estimated at a flat 2% until the statistics hold 100 common words, and no
estimate says where the matches lie. So models.search_reads does both in turn, each bounded: a
walk of the newest rows, then the index for the older matches if the walk found too few.
The `unaccent` extension is trusted: a database owner may create it.
"""

from string import punctuation as ASCII_PUNCTUATION

from alembic import op

# Migrations keep the names they created, whatever models/tables.py later calls them.
SEARCH_COLUMN = "search_words"

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = ("filename", "caption", "status")
_NAMES = ", ".join(_COLUMNS)


def _values(row: str) -> str:
    return ", ".join([f"{row}.id", *(f"{row}.{column}" for column in _COLUMNS)])


def _add(row: str) -> str:
    return f"INSERT INTO images_search (rowid, {_NAMES}) VALUES ({_values(row)});"


def _remove(row: str) -> str:
    # External content: FTS5 removes a row's terms given the values it was indexed with.
    return (
        f"INSERT INTO images_search (images_search, rowid, {_NAMES}) "
        f"VALUES ('delete', {_values(row)});"
    )


def _postgresql_upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
    # SQL-standard bodies bind `unaccent` when they are created: no search_path surprise later.
    punctuation = ASCII_PUNCTUATION.replace("'", "''")
    op.execute(
        "CREATE FUNCTION htx_search_words(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
        f"RETURN translate(unaccent('unaccent'::regdictionary, $1), '{punctuation}', '{' ' * len(ASCII_PUNCTUATION)}')"
    )
    op.execute(
        """
        CREATE FUNCTION htx_search_query(words text[]) RETURNS tsquery LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        BEGIN ATOMIC
            SELECT string_agg('(' || phrase::text || ':*)', ' & ')::tsquery
            FROM (SELECT phraseto_tsquery('simple', htx_search_words(word)) AS phrase FROM unnest(words) AS word) AS parts
            WHERE numnode(phrase) > 0;
        END
        """
    )
    op.execute(
        f"ALTER TABLE images ADD COLUMN {SEARCH_COLUMN} tsvector GENERATED ALWAYS AS ("
        "to_tsvector('simple', htx_search_words(filename)) || "
        "to_tsvector('simple', htx_search_words(coalesce(caption, '')))) STORED"
    )
    op.execute(f"CREATE INDEX ix_images_{SEARCH_COLUMN} ON images USING gin ({SEARCH_COLUMN})")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_upgrade()
        return
    op.execute(
        f"CREATE VIRTUAL TABLE images_search USING fts5({_NAMES}, "
        "content='images', content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
    )
    op.execute("INSERT INTO images_search (images_search) VALUES ('rebuild')")
    op.execute(f"CREATE TRIGGER images_search_insert AFTER INSERT ON images BEGIN {_add('NEW')} END")
    op.execute(f"CREATE TRIGGER images_search_delete AFTER DELETE ON images BEGIN {_remove('OLD')} END")
    # The daemon sets `caption` on every finished image, usually to the value it had: only a
    # real change touches the index.
    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in _COLUMNS)
    op.execute(
        f"CREATE TRIGGER images_search_update AFTER UPDATE OF {_NAMES} ON images "
        f"WHEN {changed} BEGIN {_remove('OLD')} {_add('NEW')} END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE images DROP COLUMN {SEARCH_COLUMN}")
        op.execute("DROP FUNCTION htx_search_query(text[])")
        op.execute("DROP FUNCTION htx_search_words(text)")
        return
    for name in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER images_search_{name}")
    op.execute("DROP TABLE images_search")
