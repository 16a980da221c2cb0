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

Messages are Focal's own, never the driver's: the driver's text ("duplicate key value violates
unique constraint ... DETAIL: Key (tenant_id, name)=(...)") names tables, columns and other
rows' values, and Focal errors reach API clients. It goes to the log line only. A store that
knows what a constraint means passes ``messages`` (constraint name -> message), so a unique
violation says what the in-memory backend says ("turn record ... already exists"); otherwise the
message is ``"<operation>: <what kind of failure>"``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
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


def translate_pg_error(
    exc: BaseException,
    operation: str,
    *,
    messages: Mapping[str, str] | None = None,
    duplicate: str | None = None,
) -> StoreError | None:
    """The Focal error for a driver error, or ``None`` when ``exc`` is not a driver error.

    ``messages`` maps constraint names to the message of the error a violation of that
    constraint becomes (the store's own words, as its in-memory twin says them); ``duplicate``
    is the message of any other unique violation (for statements where every unique key is the
    record's id, e.g. on a partitioned table whose index names vary by partition)."""
    constraint = getattr(exc, "constraint_name", None)
    known = messages.get(constraint) if messages and constraint else None
    if isinstance(exc, pg.UniqueViolationError) and known is None:
        known = duplicate
    if isinstance(exc, _CONFLICT):
        return ConflictError(known or f"{operation}: {_conflict_reason(exc)}")
    if isinstance(exc, pg.ForeignKeyViolationError):
        return NotFoundError(known or f"{operation}: a record it refers to does not exist")
    if isinstance(exc, _INVALID):
        return InvalidDataError(known or f"{operation}: {_invalid_reason(exc)}")
    if isinstance(exc, _CONNECTION):
        return StoreConnectionError(f"{operation}: PostgreSQL is unavailable ({_connection_reason(exc)})")
    if isinstance(exc, _SCHEMA):
        return SchemaVersionError(
            f"{operation}: the database schema is behind the code (run `focal db upgrade`)"
        )
    if isinstance(exc, asyncpg.exceptions._base.DataError):  # client-side encoding of an argument
        return InvalidDataError(f"{operation}: a value cannot be encoded for PostgreSQL")
    if isinstance(exc, asyncpg.InterfaceError):
        if "closed" in str(exc) or "closing" in str(exc):  # "connection is closed", "pool is closing"
            return StoreConnectionError(f"{operation}: PostgreSQL is unavailable (connection closed)")
        return StoreError(f"{operation}: unexpected database client error")
    if isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError):
        return StoreConnectionError(f"{operation}: PostgreSQL is unavailable ({_connection_reason(exc)})")
    if isinstance(exc, asyncpg.PostgresError):
        return StoreError(f"{operation}: unexpected database error (SQLSTATE {exc.sqlstate})")
    return None


def _conflict_reason(exc: BaseException) -> str:
    if isinstance(exc, pg.SerializationError | pg.DeadlockDetectedError):
        return "conflicted with a concurrent transaction; retry the operation"
    return "a record with the same key already exists"


# SQLSTATE class 22 codes worth naming; the rest is "a value PostgreSQL cannot store".
_INVALID_REASONS = {
    "22001": "a text value is longer than its column allows",
    "22003": "a number is out of range",
    "22004": "a required value is missing",
    "22007": "a timestamp is malformed",
    "22008": "a timestamp is out of range",
    "22021": "a text value holds a character PostgreSQL cannot store",
    "22P02": "a value is malformed for its type",
    "22P05": "a text value holds a character PostgreSQL cannot store",
}


def _invalid_reason(exc: BaseException) -> str:
    if isinstance(exc, pg.CheckViolationError):
        return "a value breaks a rule of the schema"
    if isinstance(exc, pg.NotNullViolationError):
        return "a required value is missing"
    if getattr(exc, "severity", None) is None:  # raised by asyncpg itself, encoding an argument
        return "a value cannot be encoded for PostgreSQL"
    return _INVALID_REASONS.get(getattr(exc, "sqlstate", ""), "a value PostgreSQL cannot store")


def _connection_reason(exc: BaseException) -> str:
    if isinstance(exc, pg.QueryCanceledError):
        return "the statement timed out or was cancelled"
    if isinstance(exc, pg.TooManyConnectionsError):
        return "too many connections"
    if isinstance(exc, pg.CannotConnectNowError | pg.AdminShutdownError | pg.CrashShutdownError):
        return "the server is starting or shutting down"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return "cannot reach the server"
    return "connection lost"


class translate_pg_errors:  # lower-case: used like a function, `with translate_pg_errors(...)`
    """Context manager (sync and async) translating driver errors raised inside it."""

    __slots__ = ("duplicate", "messages", "operation", "tenant_id")

    def __init__(
        self,
        operation: str,
        *,
        tenant_id: UUID | str | None = None,
        messages: Mapping[str, str] | None = None,
        duplicate: str | None = None,
    ) -> None:
        self.operation = operation
        self.tenant_id = tenant_id
        self.messages = messages
        self.duplicate = duplicate

    def __enter__(self) -> translate_pg_errors:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc is None or isinstance(exc, FocalError):
            return False
        translated = translate_pg_error(exc, self.operation, messages=self.messages, duplicate=self.duplicate)
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
            "message": str(translated),
            "detail": str(exc),  # the driver's own text: logs only, never in the raised error
        }
        for attribute, field in (
            ("sqlstate", "sqlstate"),
            ("constraint_name", "constraint"),
            ("detail", "key"),
        ):
            value = getattr(exc, attribute, None)
            if value:
                fields[field] = value
        unexpected = type(translated) is StoreError
        if unexpected or isinstance(translated, StoreConnectionError | SchemaVersionError):
            _log().error("store error", **fields)
        else:
            _log().info("store error", **fields)
