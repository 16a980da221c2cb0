"""The one place where redis-py exceptions become Focal store errors, and where every store
operation gets its bounds.

Every Redis call of the session store runs inside ``translate_redis_errors`` (through
``OperationGate``). Unreachable server, timeout, exhausted pool, a cluster that is down or
resharding (``MOVED``/``ASK`` redirections that do not settle, ``TRYAGAIN`` while a slot migrates,
"TTL exhausted"), a replica that cannot take writes or a server still loading its data:
``StoreConnectionError`` (the caller may retry later). Any other Redis error (a script bug, out of
memory on a write) is a ``StoreError``. Focal's own errors pass through untouched. Each translated
error is logged once, here, with the tenant and the operation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from uuid import UUID

from redis import exceptions as redis_exceptions

from focal.errors import FocalError, StoreConnectionError, StoreError
from focal.logging import get_logger

_log = get_logger("focal.conversation.stores.redis")

# ConnectionError covers BusyLoadingError and MaxConnectionsError (pool exhausted); ClusterError
# covers ClusterDownError and MasterDownError; AskError covers MovedError; RedisClusterException
# covers SlotNotCoveredError. OSError covers socket errors raised before redis-py wraps them;
# builtin TimeoutError is asyncio's timeout too.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_exceptions.ConnectionError,
    redis_exceptions.TimeoutError,
    redis_exceptions.ClusterError,
    redis_exceptions.AskError,
    redis_exceptions.TryAgainError,
    redis_exceptions.ReadOnlyError,
    redis_exceptions.RedisClusterException,
    TimeoutError,
    OSError,
)


def describe(exc: BaseException) -> str:
    """The exception's message, or its type when it has none (e.g. ``MaxConnectionsError()``)."""
    return str(exc) or type(exc).__name__


@contextmanager
def translate_redis_errors(operation: str, *, tenant_id: UUID | None = None) -> Iterator[None]:
    """Run Redis calls; re-raise driver errors as Focal store errors (``raise ... from exc``)."""
    try:
        yield
    except FocalError:
        raise
    except _UNAVAILABLE as exc:
        _log.warning(
            "redis unavailable",
            operation=operation,
            tenant_id=str(tenant_id) if tenant_id else None,
            error=repr(exc),
        )
        raise StoreConnectionError(f"redis unavailable during {operation}: {describe(exc)}") from exc
    except redis_exceptions.RedisError as exc:
        _log.error(
            "redis error",
            operation=operation,
            tenant_id=str(tenant_id) if tenant_id else None,
            error=repr(exc),
        )
        raise StoreError(f"redis error during {operation}: {describe(exc)}") from exc


class OperationGate:
    """Bounds every store operation: a total time, and (for a cluster) a number in flight.

    ``timeout_seconds`` covers the whole operation: waiting for a connection, every attempt the
    client makes (redis-py retries after a lost connection or a socket timeout) and the back-off
    between them. Past it the operation is abandoned (its connection is closed) and the caller gets
    ``StoreConnectionError``; a write abandoned that way may or may not have been applied, which a
    re-read shows.

    ``max_concurrent`` makes callers wait for a free slot, like a ``BlockingConnectionPool``:
    redis-py's cluster client fails a command at once with ``MaxConnectionsError`` when a node's
    pool is full. Each store operation holds at most one connection per node at a time, so
    ``max_concurrent`` equal to the per-node connection cap keeps every node within it. ``None``
    (a single server on a ``BlockingConnectionPool``, which waits by itself) admits everyone.

    Used as ``async with gate("session.get", tenant_id):``. It is on the path of every get and
    save, so it is a plain class rather than ``asyncio.timeout`` inside an ``asynccontextmanager``
    (a third of the cost); the deadline follows ``asyncio.timeout``'s rules (only its own
    cancellation becomes a timeout; a cancellation from elsewhere stays one).
    """

    def __init__(self, *, timeout_seconds: float, max_concurrent: int | None) -> None:
        self.timeout_seconds = timeout_seconds
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent is not None else None

    def __call__(self, operation: str, tenant_id: UUID | None = None, *, bounded: bool = True) -> _Operation:
        """``operation`` runs with translated errors, the total time (unless not ``bounded``:
        purges walk a whole tenant) and the concurrency bound."""
        return _Operation(self, operation, tenant_id, self.timeout_seconds if bounded else None)


class _Operation:
    __slots__ = (
        "_expired",
        "_gate",
        "_handle",
        "_holds_slot",
        "_operation",
        "_task",
        "_task_cancelling",
        "_tenant_id",
        "_timeout",
    )

    def __init__(
        self, gate: OperationGate, operation: str, tenant_id: UUID | None, timeout: float | None
    ) -> None:
        self._gate = gate
        self._operation = operation
        self._tenant_id = tenant_id
        self._timeout = timeout
        self._expired = False
        self._holds_slot = False
        self._handle: asyncio.TimerHandle | None = None

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aenter__(self) -> None:
        if self._timeout is not None:
            task = asyncio.current_task()
            assert task is not None, "store operations run in a task"
            self._task = task
            self._task_cancelling = task.cancelling()
            loop = asyncio.get_running_loop()
            self._handle = loop.call_at(loop.time() + self._timeout, self._expire)
        slots = self._gate._slots
        if slots is not None:
            try:
                await slots.acquire()
            except BaseException as exc:
                self._finish(type(exc), exc)
                raise
            self._holds_slot = True

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._holds_slot:
            assert self._gate._slots is not None
            self._gate._slots.release()
        self._finish(exc_type, exc)

    def _finish(self, exc_type: type[BaseException] | None, exc: BaseException | None) -> None:
        """Stop the timer; translate the error (Focal errors pass, driver errors are mapped, this
        deadline's own cancellation becomes ``StoreConnectionError``)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        # As asyncio.timeout: withdraw our cancellation request, and only a cancellation of ours
        # (none pending from elsewhere) becomes the timeout.
        ours = self._expired and self._task.uncancel() <= self._task_cancelling
        if exc is None:
            return
        if ours and exc_type is asyncio.CancelledError:
            waiting = self._gate._slots is not None and not self._holds_slot
            phase = "waiting for a free connection" if waiting else "waiting for Redis"
            _log.warning(
                "redis operation timed out",
                operation=self._operation,
                tenant_id=str(self._tenant_id) if self._tenant_id else None,
                timeout_seconds=self._timeout,
                phase=phase,
            )
            raise StoreConnectionError(
                f"redis did not complete {self._operation} within {self._timeout:g}s ({phase}); "
                "the bound is FOCAL_REDIS__OPERATION_TIMEOUT_SECONDS"
            ) from exc
        with translate_redis_errors(self._operation, tenant_id=self._tenant_id):
            raise exc
