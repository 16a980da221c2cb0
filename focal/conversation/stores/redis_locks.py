"""Conversation locks shared by every Focal process: a Redis key with a lease, renewed while held.

Key: ``<prefix>:lock:<tenant_id>:<sha256(key)>``, holding the holder's random token, with the
lease as its TTL. Acquire, renew and release are Lua scripts that compare the token, so a holder
never extends or deletes a lock that expired and went to someone else; each is safe to re-send
(the client retries a command whose reply was lost: a re-sent acquire finds its own token).

Waiting is polling with a short exponential backoff (5 ms doubling to 50 ms), bounded by the
caller's ``wait_seconds``: a waiting turn costs one small command per poll, and a released lock is
taken within 50 ms. The order in which several waiters get the lock is not guaranteed.

While the block runs, a task renews the lease every third of it. A process that dies (or stalls
past its lease) loses the lock; the session's version check still refuses the late save, so a
lost lock can cost a 409 or a re-run, never a lost or doubled turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

from redis.asyncio.cluster import RedisCluster

from focal.conversation.locks import ConversationLocks, busy, check_hold
from focal.conversation.stores.redis_errors import OperationGate
from focal.conversation.stores.redis_keys import SessionKeys
from focal.conversation.stores.redis_scripts import LuaScript
from focal.errors import StoreError
from focal.logging import get_logger

_log = get_logger("focal.conversation.locks")

_ACQUIRE = LuaScript(
    """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if current then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)
_RENEW = LuaScript(
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)
_RELEASE = LuaScript(
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
)
FIRST_POLL_SECONDS = 0.005
MAX_POLL_SECONDS = 0.05


class RedisConversationLocks(ConversationLocks):
    """On the session store's client (``focal.bootstrap.create_redis_client``); never closes it."""

    def __init__(
        self,
        client: Any,
        *,
        key_prefix: str = "focal",
        operation_timeout_seconds: float = 5.0,
        max_concurrent_operations: int | None = None,
    ) -> None:
        SessionKeys(key_prefix)  # the same rules for the prefix
        self._client = client
        self._prefix = key_prefix
        if isinstance(client, RedisCluster) and max_concurrent_operations is None:
            max_concurrent_operations = 100
        self._gate = OperationGate(
            timeout_seconds=operation_timeout_seconds, max_concurrent=max_concurrent_operations
        )
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    def key(self, tenant_id: UUID, key: str) -> str:
        return f"{self._prefix}:lock:{tenant_id}:{hashlib.sha256(key.encode()).hexdigest()}"

    @asynccontextmanager
    async def hold(
        self, tenant_id: UUID, key: str, *, wait_seconds: float, lease_seconds: float
    ) -> AsyncIterator[None]:
        check_hold(key, wait_seconds, lease_seconds)
        name, token = self.key(tenant_id, key), uuid4().hex
        lease_ms = max(1, round(lease_seconds * 1000))
        await self._acquire(tenant_id, name, token, lease_ms, key, wait_seconds)
        renewer = asyncio.create_task(self._renew(tenant_id, name, token, lease_seconds, lease_ms))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            try:
                async with self._gate("lock.release", tenant_id):
                    await _RELEASE(self._client, 1, name, token)
            except StoreError as exc:  # the lease frees it by itself
                _log.warning("conversation lock not released", tenant_id=str(tenant_id), error=str(exc))

    async def _acquire(
        self, tenant_id: UUID, name: str, token: str, lease_ms: int, key: str, wait_seconds: float
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        pause = FIRST_POLL_SECONDS
        self._waiting += 1
        try:
            while True:
                async with self._gate("lock.acquire", tenant_id):
                    if await _ACQUIRE(self._client, 1, name, token, lease_ms):
                        return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise busy(key, wait_seconds)
                await asyncio.sleep(min(pause, remaining))  # polling interval, bounded by the deadline
                pause = min(pause * 2, MAX_POLL_SECONDS)
        finally:
            self._waiting -= 1

    async def _renew(
        self, tenant_id: UUID, name: str, token: str, lease_seconds: float, lease_ms: int
    ) -> None:
        while True:
            await asyncio.sleep(lease_seconds / 3)
            try:
                async with self._gate("lock.renew", tenant_id):
                    held = await _RENEW(self._client, 1, name, token, lease_ms)
            except StoreError as exc:
                _log.warning("conversation lock not renewed", tenant_id=str(tenant_id), error=str(exc))
                continue
            if not held:
                _log.warning("conversation lock lost: its lease expired", tenant_id=str(tenant_id))
                return
