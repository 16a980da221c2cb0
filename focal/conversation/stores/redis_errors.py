"""The one place where redis-py exceptions become Focal store errors.

Every Redis call of the session store runs inside ``translate_redis_errors``. Unreachable server,
timeout, exhausted pool, a cluster that is down or resharding, a replica that cannot take writes
or a server still loading its data: ``StoreConnectionError`` (the caller may retry later). Any
other Redis error (a script bug, out of memory) is a ``StoreError``. Focal's own errors pass through
untouched. Each translated error is logged once, here, with the tenant and the operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from redis import exceptions as redis_exceptions

from focal.errors import FocalError, StoreConnectionError, StoreError
from focal.logging import get_logger

_log = get_logger("focal.conversation.stores.redis")

# ConnectionError covers BusyLoadingError and MaxConnectionsError (pool exhausted); OSError covers
# socket errors raised before redis-py wraps them; builtin TimeoutError is asyncio's timeout too.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_exceptions.ConnectionError,
    redis_exceptions.TimeoutError,
    redis_exceptions.ClusterDownError,
    redis_exceptions.TryAgainError,
    redis_exceptions.MasterDownError,
    redis_exceptions.ReadOnlyError,
    redis_exceptions.SlotNotCoveredError,
    redis_exceptions.RedisClusterException,
    TimeoutError,
    OSError,
)


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
        raise StoreConnectionError(f"redis unavailable during {operation}: {exc}") from exc
    except redis_exceptions.RedisError as exc:
        _log.error(
            "redis error",
            operation=operation,
            tenant_id=str(tenant_id) if tenant_id else None,
            error=repr(exc),
        )
        raise StoreError(f"redis error during {operation}: {exc}") from exc
