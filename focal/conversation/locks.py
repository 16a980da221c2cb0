"""Conversation locks: one turn at a time per conversation, across every Focal process.

With ``FOCAL_TURN__CONCURRENCY=enqueue`` a turn holds its conversation's lock from before it reads
the session until its writes are done, so a second message of the same conversation waits and
then runs on the session (and the history) the first one left. The session's version check stays
the arbiter of correctness: a lock that was lost (its lease expired under a stalled process) can
at worst let two turns overlap, and then the later save is refused as it always is.

Rules every backend follows (proven by ``tests/contract/test_conversation_locks.py``):

- ``hold(tenant_id, key, wait_seconds=..., lease_seconds=...)`` is an async context manager: it
  waits up to ``wait_seconds`` for the lock, holds it while the block runs and releases it after
  (also when the block raises or is cancelled). Not acquired in time: ``ConversationBusyError``.
- Locks are per tenant: the same key in another tenant is another lock.
- ``waiting`` counts this instance's callers currently waiting for a lock (a gauge for metrics,
  and what tests observe instead of sleeping).
- A holder that dies (its process) frees the lock when its lease expires; a live holder keeps it
  by renewing the lease (Redis). The in-memory backend lives and dies with its only process.

The in-memory backend (below) serves one process; ``focal.conversation.stores.redis_locks`` is
the shared one.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from uuid import UUID

from focal.errors import ConversationBusyError, InvalidDataError

__all__ = ["ConversationLocks", "InMemoryConversationLocks", "check_hold"]


def check_hold(key: str, wait_seconds: float, lease_seconds: float) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidDataError("a conversation lock key must be a non-empty string")
    for name, value in (("wait_seconds", wait_seconds), ("lease_seconds", lease_seconds)):
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise InvalidDataError(f"{name} must be a finite number > 0, got {value!r}")


def busy(key: str, wait_seconds: float) -> ConversationBusyError:
    return ConversationBusyError(
        f"an earlier message of this conversation was still being answered after {wait_seconds:g}s "
        "(FOCAL_TURN__ENQUEUE_WAIT_SECONDS); send it again"
    )


class ConversationLocks(ABC):
    @abstractmethod
    def hold(
        self, tenant_id: UUID, key: str, *, wait_seconds: float, lease_seconds: float
    ) -> AbstractAsyncContextManager[None]: ...

    @property
    @abstractmethod
    def waiting(self) -> int: ...


class InMemoryConversationLocks(ConversationLocks):
    """``asyncio.Lock`` per (tenant, key), first come first served; dropped when nobody uses it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[UUID, str], asyncio.Lock] = {}
        self._users: dict[tuple[UUID, str], int] = {}
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @asynccontextmanager
    async def hold(
        self, tenant_id: UUID, key: str, *, wait_seconds: float, lease_seconds: float
    ) -> AsyncIterator[None]:
        check_hold(key, wait_seconds, lease_seconds)
        slot = (tenant_id, key)
        lock = self._locks.setdefault(slot, asyncio.Lock())
        self._users[slot] = self._users.get(slot, 0) + 1
        try:
            self._waiting += 1
            try:
                async with asyncio.timeout(wait_seconds):
                    await lock.acquire()
            except TimeoutError:
                raise busy(key, wait_seconds) from None
            finally:
                self._waiting -= 1
            try:
                yield
            finally:
                lock.release()
        finally:
            self._users[slot] -= 1
            if not self._users[slot]:
                del self._users[slot]
                del self._locks[slot]
