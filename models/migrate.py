"""Create or upgrade the schema with the Alembic migrations shipped in models/migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database up to the newest revision (creating it if empty), or to `revision`
    (tests of a migration over an older schema)."""
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def head_revision() -> str | None:
    """The newest revision of the shipped migrations: what a current database is at."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def is_current(engine: Engine) -> bool:
    """Whether the database is at the newest revision (readers use this to wait for the daemon)."""
    head = head_revision()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head
