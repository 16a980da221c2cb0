"""The Redis session store on a misbehaving network or cluster: lost replies, stalled nodes,
bursts beyond the connection cap, connections closed by the server, resharding, an unreachable
server, a server killed mid-run.

Every client here is built the way production builds it (``create_redis_client`` /
``redis_connection_options``) with short timeouts, so each test takes a second or two. Faults are
real: a reply withheld by a TCP proxy after the server executed the command, a node process
stopped with SIGSTOP, the server's idle ``timeout``, a slot left half-migrated.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.backoff import NoBackoff
from redis.cluster import key_slot
from redis.retry import Retry

from focal.bootstrap import close_redis_client, create_redis_client, redis_connection_options
from focal.conversation.stores.redis_scripts import DELETE_SESSION, SAVE_AND_INDEX, SAVE_SESSION
from focal.db.embedded import LOOPBACK, EmbeddedRedis, free_port
from focal.errors import StoreConnectionError
from focal.settings import RedisSettings
from tests.integration.stores.redis_cluster import LocalRedisCluster, redis_cluster, redis_cluster_nodes
from tests.integration.stores.redis_support import (
    POLL_DEADLINE_SECONDS,
    ReplyDroppingProxy,
    make_store,
    session,
    wait_until,
)
from tests.support import new_tenant

__all__ = ["redis_cluster", "redis_cluster_nodes"]

pytestmark = pytest.mark.redis

FAST = {"socket_timeout_seconds": 0.3, "operation_timeout_seconds": 5.0, "retry_attempts": 3}


@pytest_asyncio.fixture
async def proxies(redis_cluster_nodes: list[tuple[str, int]]) -> AsyncIterator[dict[tuple[str, int], Any]]:
    """A ``ReplyDroppingProxy`` in front of every cluster node, by the node's real address."""
    started = {node: ReplyDroppingProxy(node) for node in redis_cluster_nodes}
    for proxy in started.values():
        await proxy.start()
    try:
        yield started
    finally:
        for proxy in started.values():
            await proxy.stop()


async def _lost_reply_round(
    client: Any, store: Any, proxies: list[ReplyDroppingProxy], save_sha: str
) -> None:
    """A save and a delete whose replies are lost after the server applied them: both report
    what happened (no ConflictError against themselves) and the indexes follow."""
    for script in (SAVE_AND_INDEX, SAVE_SESSION, DELETE_SESSION):  # cached on every node: the
        await client.script_load(script.source)  # withheld reply is the script's, not NOSCRIPT
    tenant = new_tenant()
    first = await store.save(session(tenant))
    for proxy in proxies:
        proxy.drop_reply_to(save_sha.encode())
    second = await store.save(first.model_copy(update={"turn_count": 1}))
    assert any(p.dropped.is_set() for p in proxies)  # the server did answer the first attempt
    assert second.version == 2 and second.turn_count == 1
    assert await store.get(tenant, first.session_id) == second
    assert await store.list_by_agent(tenant, first.agent_id) == [second]
    assert await store.get_by_channel(tenant, first.channel, first.user_channel_id) == second
    for proxy in proxies:
        proxy.drop_reply_to(DELETE_SESSION.sha.encode())
    assert await store.delete(tenant, first.session_id) is True
    assert any(p.dropped.is_set() for p in proxies)
    assert await store.get(tenant, first.session_id) is None
    assert await store.list_by_agent(tenant, first.agent_id) == []
    assert await store.get_by_channel(tenant, first.channel, first.user_channel_id) is None


async def test_a_save_whose_reply_was_lost_is_not_a_conflict_standalone(redis_url: str) -> None:
    upstream = urlsplit(redis_url)
    proxy = ReplyDroppingProxy((upstream.hostname or LOOPBACK, upstream.port or 6379))
    await proxy.start()
    client = await create_redis_client(proxy.url, RedisSettings(**FAST))
    try:
        await _lost_reply_round(client, make_store(client), [proxy], SAVE_AND_INDEX.sha)
    finally:
        await close_redis_client(client)
        await proxy.stop()


async def test_a_save_whose_reply_was_lost_is_not_a_conflict_cluster(
    proxies: dict[tuple[str, int], ReplyDroppingProxy],
) -> None:
    settings = RedisSettings(cluster=True, **FAST)
    client = RedisCluster(
        startup_nodes=[ClusterNode(*proxy.address) for proxy in proxies.values()],
        address_remap=lambda address: proxies[address].address,
        max_connections=settings.max_connections,
        **redis_connection_options(settings),
    )
    await client.initialize()
    try:
        await _lost_reply_round(client, make_store(client), list(proxies.values()), SAVE_SESSION.sha)
    finally:
        await client.aclose()


async def test_a_stalled_cluster_node_fails_within_the_operation_timeout(
    redis_cluster: LocalRedisCluster, redis_cluster_nodes: list[tuple[str, int]]
) -> None:
    host, port = redis_cluster_nodes[0]
    settings = RedisSettings(cluster=True, socket_timeout_seconds=0.2, operation_timeout_seconds=0.6)
    client = await create_redis_client(f"redis://{host}:{port}/0", settings)
    try:
        store = make_store(client, operation_timeout_seconds=settings.operation_timeout_seconds)
        tenant = new_tenant()
        saved = await store.save(session(tenant))
        node = client.get_node_from_key(store.keys.hot(saved.session_id))
        server = redis_cluster.node_at(int(node.port))
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)  # shorter than the cluster's node timeout (5 s)
        try:
            # The outer bound only keeps a regression from hanging the suite (11 attempts x 5 s).
            with pytest.raises(StoreConnectionError, match=r"within 0\.6s"):
                await asyncio.wait_for(store.get(tenant, saved.session_id), timeout=5)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert await store.get(tenant, saved.session_id) == saved
    finally:
        await close_redis_client(client)


async def test_a_stalled_server_fails_within_the_operation_timeout(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persistence=False)
    await server.start_async()
    settings = RedisSettings(socket_timeout_seconds=0.2, operation_timeout_seconds=0.6)
    client = await create_redis_client(server.url, settings)
    try:
        store = make_store(client, operation_timeout_seconds=settings.operation_timeout_seconds)
        saved = await store.save(session(new_tenant()))
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreConnectionError, match=r"within 0\.6s"):
                await asyncio.wait_for(store.save(saved), timeout=5)
            # A cancellation from outside (a client gone) stays a cancellation, not a timeout.
            waiting = asyncio.create_task(store.get(saved.tenant_id, saved.session_id))
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        finally:
            os.kill(server.pid, signal.SIGCONT)
        # The abandoned save may or may not have been applied; a re-read says which.
        stored = await store.get(saved.tenant_id, saved.session_id)
        assert stored is not None and stored.version in (1, 2)
    finally:
        await close_redis_client(client)
        await server.stop_async()


async def test_a_cluster_burst_beyond_the_connection_cap_waits_instead_of_failing(
    redis_cluster_nodes: list[tuple[str, int]],
) -> None:
    host, port = redis_cluster_nodes[0]
    client = await create_redis_client(
        f"redis://{host}:{port}/0", RedisSettings(cluster=True, max_connections=4)
    )
    try:
        store = make_store(client)  # waits at the client's cap (4 per node) by default
        tenant = new_tenant()
        saved = [await store.save(session(tenant)) for _ in range(20)]
        results = await asyncio.gather(
            *(store.get(tenant, saved[i % 20].session_id) for i in range(200)), return_exceptions=True
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert results == [saved[i % 20] for i in range(200)]
    finally:
        await close_redis_client(client)


async def test_connections_closed_by_the_server_while_idle_are_replaced(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persistence=False)
    await server.start_async()
    client = await create_redis_client(server.url, RedisSettings())
    watcher = Redis.from_url(server.url)  # polls more often than the idle timeout: never closed
    try:
        store = make_store(client)
        tenant = new_tenant()
        saved = await store.save(session(tenant))
        assert await asyncio.gather(*(store.get(tenant, saved.session_id) for _ in range(30))) == [saved] * 30
        await watcher.config_set("timeout", 1)

        async def only_the_watcher_left() -> bool:
            return int((await watcher.info("clients"))["connected_clients"]) == 1

        await wait_until(only_the_watcher_left, "the server to close the idle pooled connections")
        results = await asyncio.gather(
            *(store.get(tenant, saved.session_id) for _ in range(30)), return_exceptions=True
        )
        assert results == [saved] * 30
    finally:
        await watcher.aclose()
        await close_redis_client(client)
        await server.stop_async()


async def test_a_slot_being_migrated_is_a_connection_error_not_a_store_error(
    redis_cluster_nodes: list[tuple[str, int]],
) -> None:
    """Resharding: the session's slot is MIGRATING with one of its keys already moved, so the
    node answers TRYAGAIN until the migration settles. Callers get the retryable 503 error."""
    host, port = redis_cluster_nodes[0]
    client = await create_redis_client(f"redis://{host}:{port}/0", RedisSettings(cluster=True))
    try:
        store = make_store(client)
        tenant = new_tenant()
        saved = await store.save(session(tenant))
        hot_key = store.keys.hot(saved.session_id)
        slot = key_slot(hot_key.encode())
        source = client.get_node_from_key(hot_key)
        target = next(n for n in client.get_primaries() if n.name != source.name)
        async with (
            Redis(host=source.host, port=source.port) as source_admin,
            Redis(host=target.host, port=target.port) as target_admin,
        ):
            source_id = (await source_admin.execute_command("CLUSTER", "MYID")).decode()
            target_id = (await target_admin.execute_command("CLUSTER", "MYID")).decode()
            await target_admin.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            await source_admin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            try:
                await source_admin.execute_command(
                    "MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", hot_key
                )
                with pytest.raises(StoreConnectionError):
                    await store.get(tenant, saved.session_id)
            finally:  # drop the moved key and give the slot back: the cluster is shared
                pipe = target_admin.pipeline(transaction=False)  # one connection: ASKING applies
                pipe.execute_command("ASKING")
                pipe.delete(hot_key)
                await pipe.execute()
                for admin in (source_admin, target_admin):
                    await admin.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        assert await store.get(tenant, saved.session_id) == saved  # promoted again from the persistent copy
    finally:
        await close_redis_client(client)


async def test_unreachable_server_raises_store_connection_error() -> None:
    client = Redis(port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    store = make_store(client)
    try:
        assert await store.health_check() is False
        with pytest.raises(StoreConnectionError) as raised:
            await store.get(new_tenant(), uuid4())
        assert raised.value.__cause__ is not None
        with pytest.raises(StoreConnectionError):
            await store.save(session(new_tenant()))
        with pytest.raises(StoreConnectionError):
            await store.list_by_agent(new_tenant(), uuid4())
    finally:
        await client.aclose()


class DurableRedis(EmbeddedRedis):
    """Append-only file fsynced on every write, so a SIGKILL loses nothing acknowledged."""

    def _command(self, port: int) -> list[str]:
        return [*super()._command(port), "--appendfsync", "always"]


async def test_server_killed_mid_run_then_restarted_keeps_last_committed_session(tmp_path: Path) -> None:
    server = DurableRedis(tmp_path / "redis", persistence=True)
    await server.start_async()
    pool = BlockingConnectionPool.from_url(
        server.url, max_connections=8, timeout=5, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    client = Redis(connection_pool=pool)
    try:
        assert await client.config_get("appendfsync") == {"appendfsync": "always"}
        store = make_store(client)
        tenant = new_tenant()
        last_ok = await store.save(session(tenant))
        killed = asyncio.Event()

        async def keep_saving() -> StoreConnectionError:
            nonlocal last_ok
            while True:
                try:
                    last_ok = await store.save(
                        last_ok.model_copy(update={"turn_count": last_ok.turn_count + 1})
                    )
                except StoreConnectionError as exc:
                    return exc
                if last_ok.version == 20:
                    killed.set()
                    await asyncio.sleep(0)  # let the kill happen between two saves or during one

        writer = asyncio.create_task(keep_saving())
        await killed.wait()
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        error = await asyncio.wait_for(writer, timeout=POLL_DEADLINE_SECONDS)
        assert isinstance(error, StoreConnectionError)
        with pytest.raises(StoreConnectionError):
            await store.get(tenant, last_ok.session_id)
        await server.stop_async()
        await server.start_async()

        async def healthy() -> bool:
            return await store.health_check()

        await wait_until(healthy, "the restarted server to answer")
        stored = await store.get(tenant, last_ok.session_id)
        assert stored is not None
        # The write in flight at the kill may have been committed without its reply arriving.
        assert stored.version in (last_ok.version, last_ok.version + 1)
        if stored.version == last_ok.version:
            assert stored == last_ok
        assert stored.turn_count == stored.version - 1
        hot = await client.get(store.keys.hot(stored.session_id))
        assert hot in (None, await client.get(store.keys.persist(stored.session_id)))
        again = await store.save(stored)
        assert again.version == stored.version + 1
    finally:
        await client.aclose()
        await pool.aclose()
        await server.stop_async()
