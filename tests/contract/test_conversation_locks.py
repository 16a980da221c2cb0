"""ConversationLocks contract: in-memory, Redis and Redis Cluster hold the same promises.

Waiting is observed through ``locks.waiting`` (polled with a bound), never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from uuid import uuid4

import pytest

from focal.conversation.locks import ConversationLocks, InMemoryConversationLocks
from focal.conversation.stores.redis_locks import RedisConversationLocks
from focal.errors import ConversationBusyError, InvalidDataError
from tests.contract.redis_backends import (
    REDIS_BACKENDS,
    redis_client_for,
    redis_cluster_client,
    redis_cluster_nodes,
)
from tests.support import new_tenant, until

__all__ = ["redis_cluster_client", "redis_cluster_nodes"]  # fixtures

LONG = 10.0  # a wait or lease no test reaches


@pytest.fixture(params=REDIS_BACKENDS)
def locks(request: pytest.FixtureRequest) -> Iterator[ConversationLocks]:
    if request.param == "inmemory":
        yield InMemoryConversationLocks()
    else:
        client = redis_client_for(request, request.param)
        yield RedisConversationLocks(client, key_prefix=f"locks-{uuid4().hex[:8]}")


async def test_a_second_holder_waits_until_the_first_leaves(locks: ConversationLocks) -> None:
    tenant = new_tenant()
    order: list[str] = []
    leave = asyncio.Event()

    async def first() -> None:
        async with locks.hold(tenant, "conv", wait_seconds=LONG, lease_seconds=LONG):
            order.append("first in")
            await leave.wait()
            order.append("first out")

    async def second() -> None:
        async with locks.hold(tenant, "conv", wait_seconds=LONG, lease_seconds=LONG):
            order.append("second in")

    holder = asyncio.create_task(first())
    await until(lambda: order == ["first in"])
    waiter = asyncio.create_task(second())
    await until(lambda: locks.waiting == 1)
    assert order == ["first in"]  # waiting, not running
    leave.set()
    await asyncio.gather(holder, waiter)
    assert order == ["first in", "first out", "second in"]
    assert locks.waiting == 0


async def test_a_wait_past_its_bound_is_busy_and_the_holder_keeps_the_lock(locks: ConversationLocks) -> None:
    tenant = new_tenant()
    async with locks.hold(tenant, "conv", wait_seconds=LONG, lease_seconds=LONG):
        with pytest.raises(ConversationBusyError):
            async with locks.hold(tenant, "conv", wait_seconds=0.05, lease_seconds=LONG):
                pytest.fail("acquired a held lock")
        with pytest.raises(ConversationBusyError):  # still held
            async with locks.hold(tenant, "conv", wait_seconds=0.02, lease_seconds=LONG):
                pytest.fail("acquired a held lock")
    assert locks.waiting == 0
    async with locks.hold(tenant, "conv", wait_seconds=0.5, lease_seconds=LONG):
        pass  # free again


async def test_the_lock_is_released_when_the_block_raises_or_is_cancelled(locks: ConversationLocks) -> None:
    tenant = new_tenant()
    with pytest.raises(RuntimeError):
        async with locks.hold(tenant, "conv", wait_seconds=LONG, lease_seconds=LONG):
            raise RuntimeError("turn failed")
    entered = asyncio.Event()

    async def cancelled_turn() -> None:
        async with locks.hold(tenant, "conv", wait_seconds=LONG, lease_seconds=LONG):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(cancelled_turn())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with locks.hold(tenant, "conv", wait_seconds=0.5, lease_seconds=LONG):
        pass


async def test_locks_are_per_tenant_and_per_key(locks: ConversationLocks) -> None:
    tenant, other = new_tenant(), new_tenant()
    async with (
        locks.hold(tenant, "conv", wait_seconds=LONG, lease_seconds=LONG),
        locks.hold(other, "conv", wait_seconds=0.05, lease_seconds=LONG),
        locks.hold(tenant, "another conversation", wait_seconds=0.05, lease_seconds=LONG),
    ):
        pass


async def test_a_cancelled_waiter_stops_waiting_and_takes_nothing(locks: ConversationLocks) -> None:
    tenant = new_tenant()
    async with locks.hold(tenant, "conv", wait_seconds=LONG, lease_seconds=LONG):
        waiter = asyncio.create_task(_hold_once(locks, tenant))
        await until(lambda: locks.waiting == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert locks.waiting == 0
    async with locks.hold(tenant, "conv", wait_seconds=0.5, lease_seconds=LONG):
        pass


async def _hold_once(locks: ConversationLocks, tenant: object) -> None:
    async with locks.hold(tenant, "conv", wait_seconds=LONG, lease_seconds=LONG):  # type: ignore[arg-type]
        pass


@pytest.mark.parametrize(
    ("key", "wait", "lease"), [("", 1.0, 1.0), ("k", 0.0, 1.0), ("k", 1.0, -1.0), ("k", float("inf"), 1.0)]
)
async def test_bad_arguments_are_refused(
    locks: ConversationLocks, key: str, wait: float, lease: float
) -> None:
    with pytest.raises(InvalidDataError):
        async with locks.hold(new_tenant(), key, wait_seconds=wait, lease_seconds=lease):
            pytest.fail("held with bad arguments")
    assert locks.waiting == 0
