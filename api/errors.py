"""Errors the API answers with, and the one place they become responses.

Every error a client sees is JSON `{"error": message}` with its status: the API's own errors
(exceptions carrying their status, as datasette does), Starlette's 404 and 405, and anything
unexpected, which is logged here with its traceback and answered as a bare 500.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Collection, Mapping

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.faults import problem_of
from api.serialize import JsonResponse
from models.formats import DEFAULT_ACCEPTED, spoken
from models.store_fault import StoreFault

log = logging.getLogger("htx.api")

# What reading the database raises: SQLAlchemy's errors, and sqlite3's own from the queries
# that run on the raw cursor (models.reads). Not created yet, or not reachable: SQLite's
# OperationalError (no file, no table), PostgreSQL's server down or unreachable (operational,
# or interface for a connection lost) or a table not there yet (programming).
DATABASE_ERRORS = (DBAPIError, sqlite3.DatabaseError)
NOT_CREATED_YET = (OperationalError, InterfaceError, ProgrammingError, sqlite3.OperationalError)

UNSUPPORTED_MESSAGE = "Only JPEG and PNG files are allowed."
DATABASE_UNAVAILABLE = "The database is not available: it is not created yet (the daemon creates it when it starts)."
DATABASE_DAMAGED = "The database file is damaged or is not an HTX database: the server's log says more."
DISK_FULL = "The server's disk is full: try again later."
STORE_UNREACHABLE = "The image store cannot be reached: try again later."


def unsupported_message(accepted: Collection[str]) -> str:
    """The 400 for an upload of another format: the original API's words under the default
    `pipeline.formats`, else the formats it accepts ("Only JPEG, PNG and HEIF files ...")."""
    if accepted == DEFAULT_ACCEPTED:
        return UNSUPPORTED_MESSAGE
    return f"Only {spoken(accepted)} files are allowed."


class ApiError(Exception):
    """An answer other than success; `status_code` is the HTTP status, the message is shown."""

    status_code = 500

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="htx"'})


class TooManyRequests(ApiError):
    status_code = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class ContentTooLarge(ApiError):
    status_code = 413


class UnsupportedMediaType(ApiError):
    status_code = 415


class ServiceUnavailable(ApiError):
    status_code = 503


class InsufficientStorage(ApiError):
    status_code = 507


def error_response(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> JsonResponse:
    return JsonResponse({"error": message}, status_code=status_code, headers=headers)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.message, exc.headers)


async def _http_error(_request: Request, exc: Exception) -> Response:
    """Starlette's own: 404 for no route, 405 (keeps its Allow header), 400 for a bad body."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return error_response(exc.status_code, exc.detail, exc.headers)


async def _database_error(request: Request, exc: Exception) -> Response:
    # A problem api.faults names (unreachable, slots full, a lock or statement timeout, SQLite
    # busy): said as such. Else no database file yet, or a schema the daemon has not created:
    # the reader cannot work until the daemon has run. Any other database error: the file is
    # not a database, or is corrupt. The detail stays in the log, once per change of problem
    # (api.faults.Faults): it names server paths.
    detail = getattr(exc, "orig", exc)
    problem = problem_of(exc)
    if problem is None:
        problem = "not created yet" if isinstance(exc, NOT_CREATED_YET) else "damaged"
        message = DATABASE_UNAVAILABLE if problem == "not created yet" else DATABASE_DAMAGED
    else:
        message = f"The database is not available: {problem}. Try again shortly."
    faults = getattr(getattr(request.app.state, "api", None), "faults", None)
    if faults is not None:
        faults.failed(problem, detail)
    else:
        log.warning("database unavailable: %s", detail)
    return error_response(503, message, {"Retry-After": "5"})


async def _internal_error(_request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "Internal Server Error")


async def _store_fault(request: Request, exc: Exception) -> Response:
    # An object store that failed under an action (a delete, a reprocess): the server's fault.
    assert isinstance(exc, StoreFault)
    health = getattr(getattr(request.app.state, "api", None), "store_health", None)
    if health is not None:
        health.failed(exc)
    return error_response(503, STORE_UNREACHABLE, {"Retry-After": "5"})


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    StoreFault: _store_fault,
    HTTPException: _http_error,
    **{error: _database_error for error in DATABASE_ERRORS},
    Exception: _internal_error,
}
