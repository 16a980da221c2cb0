"""Redis-only behaviour of the idempotency store and the conversation locks: a lost reply to a
reservation or an acquire is re-sent by the client and must not count against the caller, a lock
is kept past its lease while its holder renews it, and a dead holder's lock frees itself.

Clients are built as production builds them (``create_redis_client``) with short socket timeouts;
the lost reply is real (``ReplyDroppingProxy`` withholds it after the server ran the command).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from focal.bootstrap import close_redis_client, create_redis_client
from focal.conversation.stores import redis_locks
from focal.conversation.stores.redis_locks import RedisConversationLocks
from focal.db.embedded import LOOPBACK
from focal.errors import ConversationBusyError
from focal.idempotency import redis as idempotency_redis
from focal.idempotency.redis import RedisIdempotencyStore
from focal.idempotency.store import ReservationOutcome
from focal.settings import RedisSettings
from tests.integration.stores.redis_support import ReplyDroppingProxy
from tests.support import new_tenant

pytestmark = pytest.mark.redis


FAST = {"socket_timeout_seconds": 0.3, "operation_timeout_seconds": 5.0, "retry_attempts": 3}


async def _through_proxy(redis_url: str) -> tuple[ReplyDroppingProxy, Any]:
    upstream = urlsplit(redis_url)
    proxy = ReplyDroppingProxy((upstream.hostname or LOOPBACK, upstream.port or 6379))
    await proxy.start()
    return proxy, await create_redis_client(proxy.url, RedisSettings(**FAST))


async def test_a_reservation_whose_reply_was_lost_is_still_the_callers(redis_url: str) -> None:
    proxy, client = await _through_proxy(redis_url)
    try:
        await client.script_load(idempotency_redis._RESERVE.source)  # the withheld reply is the script's
        store = RedisIdempotencyStore(client, key_prefix=f"it-{uuid4().hex[:8]}")
        tenant = new_tenant()
        proxy.drop_reply_to(idempotency_redis._RESERVE.sha.encode())
        reservation = await store.reserve(tenant, "POST /x", "key", "fp", in_flight_seconds=60)
        assert proxy.dropped.is_set()  # the first attempt ran on the server
        assert reservation.outcome is ReservationOutcome.STARTED
        # ...and it is one reservation: another request with the key is told it is in progress.
        other = await store.reserve(tenant, "POST /x", "key", "fp", in_flight_seconds=60)
        assert other.outcome is ReservationOutcome.IN_PROGRESS
    finally:
        await close_redis_client(client)
        await proxy.stop()


async def test_an_acquire_whose_reply_was_lost_holds_the_lock(redis_url: str) -> None:
    proxy, client = await _through_proxy(redis_url)
    try:
        await client.script_load(redis_locks._ACQUIRE.source)
        locks = RedisConversationLocks(client, key_prefix=f"it-{uuid4().hex[:8]}")
        tenant = new_tenant()
        proxy.drop_reply_to(redis_locks._ACQUIRE.sha.encode())
        started = time.monotonic()
        async with locks.hold(tenant, "conv", wait_seconds=30, lease_seconds=30):
            assert proxy.dropped.is_set()
            # Held at once (not after waiting out its own 30 s lease), and really held.
            assert time.monotonic() - started < 15
            with pytest.raises(ConversationBusyError):
                async with locks.hold(tenant, "conv", wait_seconds=0.05, lease_seconds=30):
                    pytest.fail("acquired a held lock")
    finally:
        await close_redis_client(client)
        await proxy.stop()


async def test_a_holder_keeps_the_lock_past_its_lease_by_renewing_it(redis_client: Redis) -> None:
    locks = RedisConversationLocks(redis_client, key_prefix=f"it-{uuid4().hex[:8]}")
    tenant = new_tenant()
    name = locks.key(tenant, "conv")
    async with locks.hold(tenant, "conv", wait_seconds=1, lease_seconds=0.15):
        # Watch the lease being pushed back three times (each renewal resets the TTL upwards).
        renewals, last = 0, await redis_client.pttl(name)
        deadline = time.monotonic() + 5
        while renewals < 3:
            assert time.monotonic() < deadline, "the lease was not renewed"
            ttl = await redis_client.pttl(name)
            assert ttl > 0, "the lock expired while held"
            renewals += ttl > last
            last = ttl
            await asyncio.sleep(0.01)
        with pytest.raises(ConversationBusyError):
            async with locks.hold(tenant, "conv", wait_seconds=0.05, lease_seconds=1):
                pytest.fail("acquired a held lock")
    assert await redis_client.exists(name) == 0  # released on exit


async def test_a_dead_holders_lock_frees_itself_when_its_lease_ends(redis_client: Redis) -> None:
    locks = RedisConversationLocks(redis_client, key_prefix=f"it-{uuid4().hex[:8]}")
    tenant = new_tenant()
    # A holder that died: its token is there, nobody renews it.
    await redis_client.set(locks.key(tenant, "conv"), "dead-process-token", px=200)
    async with locks.hold(tenant, "conv", wait_seconds=10, lease_seconds=5):
        assert await redis_client.get(locks.key(tenant, "conv")) != b"dead-process-token"
    # A holder whose lease ran out while it stalled never deletes the next holder's lock.
    async with locks.hold(tenant, "stalled", wait_seconds=1, lease_seconds=5):
        await redis_client.set(locks.key(tenant, "stalled"), "next-holder", px=60_000)
    assert await redis_client.get(locks.key(tenant, "stalled")) == b"next-holder"
