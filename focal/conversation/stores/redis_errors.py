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
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
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
    """

    def __init__(self, *, timeout_seconds: float, max_concurrent: int | None) -> None:
        self.timeout_seconds = timeout_seconds
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent is not None else None

    @asynccontextmanager
    async def __call__(
        self, operation: str, tenant_id: UUID | None = None, *, bounded: bool = True
    ) -> AsyncIterator[None]:
        """Run the body as ``operation``: translated errors, the total time (unless not
        ``bounded``: purges walk a whole tenant) and the concurrency bound."""
        timeout = self.timeout_seconds if bounded else None
        waiting = self._slots is not None
        with translate_redis_errors(operation, tenant_id=tenant_id):
            try:
                async with asyncio.timeout(timeout) as deadline:
                    if self._slots is None:
                        yield
                    else:
                        async with self._slots:
                            waiting = False
                            yield
            except TimeoutError as exc:
                if not deadline.expired():
                    raise
                phase = "waiting for a free connection" if waiting else "waiting for Redis"
                _log.warning(
                    "redis operation timed out",
                    operation=operation,
                    tenant_id=str(tenant_id) if tenant_id else None,
                    timeout_seconds=timeout,
                    phase=phase,
                )
                raise StoreConnectionError(
                    f"redis did not complete {operation} within {timeout:g}s ({phase}); the bound is "
                    "FOCAL_REDIS__OPERATION_TIMEOUT_SECONDS"
                ) from exc
