"""What every `htx` command shares: its exit codes, and the database opened with one line
said when it cannot be."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from models.config import Config
from models.files import current_user

if TYPE_CHECKING:
    from sqlalchemy import Engine

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def open_database(config: Config, command: str, *, readonly: bool = False) -> Engine | None:
    """An engine on the database the daemon made, or None after saying on stderr why there is
    none: no SQLite file yet, a server that cannot be reached, no schema yet."""
    from sqlalchemy.exc import DBAPIError

    from models.db import display_url, make_engine, missing_database
    from models.status_reads import schema_revision

    not_yet = f"htx {command}: no database yet: the daemon has not run with this configuration"
    if missing_database(config.database_url):
        print(not_yet, file=sys.stderr)
        return None
    engine = make_engine(config.database_url, readonly=readonly)
    try:
        with engine.connect() as connection:
            revision = schema_revision(connection)
    except DBAPIError as error:
        engine.dispose()
        print(f"htx {command}: cannot open the database {display_url(config.database_url)}: {reason(error)}", file=sys.stderr)
        return None
    if revision is None:
        engine.dispose()
        print(f"{not_yet} (or run `htx db migrate`)", file=sys.stderr)
        return None
    return engine


def path_problem(error: OSError) -> str:
    """An OSError of a path as one line: what, where, and for a permission, as whom."""
    said = error.strerror or type(error).__name__
    if error.filename is not None:
        said += f": {error.filename}"
    if isinstance(error, PermissionError):
        said += f" (htx runs as the user {current_user()})"
    return said


def reason(error: Exception) -> str:
    """A database error's first line: the driver's words, without SQLAlchemy's statement dump."""
    return (str(getattr(error, "orig", None) or error).strip().splitlines() or [type(error).__name__])[0]
