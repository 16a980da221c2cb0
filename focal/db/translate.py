"""asyncpg and OS errors -> Focal errors, in one place for every PostgreSQL store.

    with translate_pg_errors("save_rule", tenant_id=rule.tenant_id):
        await connection.execute(...)

(``async with`` works too.) Focal errors raised inside pass through untouched. Everything else
that a driver can throw is re-raised as a ``focal.errors`` type with ``raise ... from exc``,
after one structured log line carrying ``operation``, ``tenant_id`` and the error:

| driver error                                                       | Focal error            |
|--------------------------------------------------------------------|------------------------|
| UniqueViolation, ExclusionViolation, SerializationFailure, Deadlock| ConflictError          |
| ForeignKeyViolation                                                | NotFoundError          |
| CheckViolation, NotNullViolation, class 22 (DataError: invalid     | InvalidDataError       |
| text, truncation, wrong vector dimension ...), client-side DataError|                       |
| connection lost/refused/closed, timeouts (incl. pool acquire),     | StoreConnectionError   |
| TooManyConnections, CannotConnectNow, Admin/CrashShutdown,         |                        |
| QueryCanceled (statement_timeout), OSError                         |                        |
| UndefinedTable, UndefinedColumn, UndefinedObject                   | SchemaVersionError     |
| any other PostgresError / InterfaceError                           | StoreError             |

Serialisation failures and deadlocks are concurrency conflicts, hence ``ConflictError``: the
caller may retry the whole operation.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Literal
from uuid import UUID

import asyncpg
from asyncpg import exceptions as pg

from focal.errors import (
    ConflictError,
    FocalError,
    InvalidDataError,
    NotFoundError,
    SchemaVersionError,
    StoreConnectionError,
    StoreError,
)
from focal.logging import get_logger

__all__ = ["translate_pg_error", "translate_pg_errors"]


def _log() -> Any:
    # Bound per call, not at import: a logger bound at import time keeps structlog's defaults
    # (stdout) even after `configure_logging` runs.
    return get_logger("focal.db")


_CONFLICT = (
    pg.UniqueViolationError,
    pg.ExclusionViolationError,
    pg.SerializationError,
    pg.DeadlockDetectedError,
)
_INVALID = (
    pg.CheckViolationError,
    pg.NotNullViolationError,
    pg.DataError,  # SQLSTATE class 22, parent of InvalidTextRepresentation, StringDataRightTruncation ...
    pg.InvalidParameterValueError,
)
_CONNECTION = (
    pg.PostgresConnectionError,  # class 08, incl. ConnectionDoesNotExistError
    pg.TooManyConnectionsError,
    pg.CannotConnectNowError,
    pg.AdminShutdownError,
    pg.CrashShutdownError,
    pg.QueryCanceledError,
    asyncpg.ConnectionDoesNotExistError,
)
_SCHEMA = (pg.UndefinedTableError, pg.UndefinedColumnError, pg.UndefinedObjectError)


def translate_pg_error(exc: BaseException, operation: str) -> StoreError | None:
    """The Focal error for a driver error, or ``None`` when ``exc`` is not a driver error."""
    detail = f"{operation}: {type(exc).__name__}: {exc}"
    if isinstance(exc, _CONFLICT):
        return ConflictError(detail)
    if isinstance(exc, pg.ForeignKeyViolationError):
        return NotFoundError(detail)
    if isinstance(exc, _INVALID):
        return InvalidDataError(detail)
    if isinstance(exc, _CONNECTION):
        return StoreConnectionError(detail)
    if isinstance(exc, _SCHEMA):
        return SchemaVersionError(f"{detail} (the schema is behind the code: run `focal db upgrade`)")
    if isinstance(exc, asyncpg.exceptions._base.DataError):  # client-side encoding of an argument
        return InvalidDataError(detail)
    if isinstance(exc, asyncpg.InterfaceError):
        if "closed" in str(exc) or "closing" in str(exc):  # "connection is closed", "pool is closing"
            return StoreConnectionError(detail)
        return StoreError(detail)
    if isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError):
        return StoreConnectionError(detail)
    if isinstance(exc, asyncpg.PostgresError):
        return StoreError(detail)
    return None


class translate_pg_errors:  # lower-case: used like a function, `with translate_pg_errors(...)`
    """Context manager (sync and async) translating driver errors raised inside it."""

    __slots__ = ("operation", "tenant_id")

    def __init__(self, operation: str, *, tenant_id: UUID | str | None = None) -> None:
        self.operation = operation
        self.tenant_id = tenant_id

    def __enter__(self) -> translate_pg_errors:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc is None or isinstance(exc, FocalError):
            return False
        translated = translate_pg_error(exc, self.operation)
        if translated is None:  # not a driver error: a bug or a cancellation, let it propagate
            return False
        self._log(exc, translated)
        raise translated from exc

    async def __aenter__(self) -> translate_pg_errors:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)

    def _log(self, exc: BaseException, translated: StoreError) -> None:
        fields: dict[str, Any] = {
            "operation": self.operation,
            "tenant_id": str(self.tenant_id) if self.tenant_id is not None else None,
            "error": type(translated).__name__,
            "driver_error": type(exc).__name__,
            "detail": str(exc),
        }
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate:
            fields["sqlstate"] = sqlstate
        unexpected = type(translated) is StoreError
        if unexpected or isinstance(translated, StoreConnectionError | SchemaVersionError):
            _log().error("store error", **fields)
        else:
            _log().info("store error", **fields)
