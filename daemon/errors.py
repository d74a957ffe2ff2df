"""Why a file could not be processed.

Each error is a kind of `PipelineError`; its message is what gets stored and shown, so it
says what is wrong with the file in words a person can act on, and never holds a server path.
The errors of a file's bytes that the API raises too (`CorruptImage`, `UnsupportedFormat`)
and their base live in models.image_errors; they are named here as well so that the daemon
imports every error from one place.
"""

from __future__ import annotations

import errno

from sqlalchemy.exc import DatabaseError, DBAPIError, InterfaceError, OperationalError

from models.files import NotRegularFile
from models.image_errors import CorruptImage, PipelineError, UnsupportedFormat

__all__ = [
    "CorruptImage",
    "EnvironmentFault",
    "MissingFile",
    "NotRegularFile",
    "PipelineError",
    "SourceChanged",
    "TooLarge",
    "UnsupportedFormat",
    "database_fault",
    "is_database_fault",
    "storage_fault",
]


class TooLarge(PipelineError):
    kind = "too_large"

    def __init__(self, detail: str) -> None:
        super().__init__(f"too large: {detail}")


class MissingFile(PipelineError):
    kind = "missing"

    def __init__(self, message: str = "the file disappeared before it could be processed") -> None:
        super().__init__(message)


class OriginalGone(MissingFile):
    """An image queued again whose stored original is no longer in the data folder."""

    def __init__(self) -> None:
        super().__init__("its original is no longer stored; drop the same file into the inbox again to put it back")


class SourceChanged(MissingFile):
    """The file was deleted or rewritten in place while it was processed: what was read is gone."""

    def __init__(self) -> None:
        super().__init__(
            "the file was deleted or rewritten while it was being processed; a rewritten file is processed again"
        )


class EnvironmentFault(Exception):
    """A fault of the machine, not of the image: a full disk, a folder HTX needs that is gone or
    not writable, a database that cannot be written. The image waits and is tried again once
    the fault is gone; `problem` says what is wrong in a few words ("data disk full")."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"{problem}: {detail}" if detail else problem)
        self.problem = problem
        self.detail = detail


_STORAGE_PROBLEMS = {
    errno.ENOSPC: "data disk full",
    errno.EDQUOT: "data disk full (quota)",
    errno.EROFS: "data disk is read-only",
    errno.EIO: "data disk I/O error",
    errno.EACCES: "no permission to write in the data folder",
    errno.EPERM: "no permission to write in the data folder",
    errno.ENOTDIR: "a folder of the data folder is not a folder",
    errno.EEXIST: "a folder of the data folder is not a folder",
    errno.ENOENT: "a folder of the data folder is missing",
}


def storage_fault(error: OSError, folder: str = "") -> EnvironmentFault:
    """What writing into the data folder's `folder` ("thumbnails") failed of, as a fault of the
    machine. The detail names the folder by its name in the data folder, never a server path."""
    # An object store's fault says itself what it is (models.store_fault.StoreFault).
    problem = getattr(error, "problem", None) or _STORAGE_PROBLEMS.get(error.errno or 0, "cannot write in the data folder")
    where = f" ({folder}/)" if folder else ""
    return EnvironmentFault(problem, f"{error.strerror or type(error).__name__}{where}")


# The drivers' messages (SQLite's, PostgreSQL's) -> the problem to report.
NO_FREE_SLOT = "no free connection slot on the database server"
_DATABASE_PROBLEMS = (
    ("database or disk is full", "data disk full"),
    ("no space left on device", "database server's disk full"),
    ("read-only transaction", "database is read-only"),
    ("database is locked", "database is locked"),
    ("disk i/o error", "database I/O error"),
    ("malformed", "database is corrupt"),
    ("not a database", "database is corrupt"),
    ("readonly", "database is read-only"),
    ("unable to open", "database cannot be opened"),
    # PostgreSQL's words for a server that has every slot taken (53300: "sorry, too many
    # clients already", or the slots left are reserved), and for the timeouts models.db sets.
    ("too many clients", NO_FREE_SLOT),
    ("too many connections", NO_FREE_SLOT),
    ("remaining connection slots", NO_FREE_SLOT),
    ("lock timeout", "database lock timeout (a lock held elsewhere)"),
    ("statement timeout", "database statement timeout"),
)


def is_database_fault(error: DBAPIError) -> bool:
    """Whether a database error is the environment's: the server or file cannot be reached,
    opened or written (operational and interface errors, and SQLite's plain DatabaseError for
    a damaged file). Integrity and programming errors are bugs."""
    return isinstance(error, OperationalError | InterfaceError) or type(error) is DatabaseError


def database_fault(error: Exception) -> EnvironmentFault:
    """A database error that is no bug of HTX's (SQLAlchemy's OperationalError and its kin)."""
    message = str(getattr(error, "orig", error) or type(error).__name__).splitlines()[0]
    lowered = message.lower()
    problem = next((problem for text, problem in _DATABASE_PROBLEMS if text in lowered), "database unavailable")
    return EnvironmentFault(problem, message)
