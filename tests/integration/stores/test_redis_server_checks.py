"""What Focal requires of the Redis server, checked at start-up and by ``/ready``, and how the
session store behaves when the server is full.

These tests change server settings (``maxmemory``, ``maxmemory-policy``), so they run against a
dedicated server of this module, reset after every test, never the suite's shared one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from structlog.testing import capture_logs

from focal.bootstrap import ReadinessChecks, close_redis_client, create_redis_client
from focal.db.embedded import EmbeddedRedis
from focal.errors import ConfigurationError, StoreError
from focal.settings import RedisSettings
from tests.integration.stores.redis_cluster import redis_cluster_nodes
from tests.integration.stores.redis_support import make_store, session
from tests.support import new_tenant

__all__ = ["redis_cluster_nodes"]

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-private") / "data", persistence=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def admin(private_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    """A plain client of the private server; its settings are reset after each test."""
    client = Redis.from_url(private_server.url)
    try:
        yield client
    finally:
        await client.config_set("maxmemory", 0)
        await client.config_set("maxmemory-policy", "noeviction")
        await client.flushall()
        await client.aclose()


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "volatile-ttl", "allkeys-random"])
async def test_an_evicting_policy_is_refused_at_start_up(
    private_server: EmbeddedRedis, admin: Redis, policy: str
) -> None:
    await admin.config_set("maxmemory-policy", policy)
    with pytest.raises(ConfigurationError) as raised:
        await create_redis_client(private_server.url, RedisSettings())
    message = str(raised.value)
    assert f"maxmemory-policy {policy}" in message
    assert "noeviction" in message and "FOCAL_REDIS__ALLOW_EVICTION" in message


async def test_the_eviction_opt_out_starts_with_a_warning_and_readiness_follows_the_policy(
    private_server: EmbeddedRedis, admin: Redis
) -> None:
    await admin.config_set("maxmemory-policy", "allkeys-lru")
    with capture_logs() as logs:
        client = await create_redis_client(private_server.url, RedisSettings(allow_eviction=True))
    try:
        warnings = [e for e in logs if e["log_level"] == "warning" and "evict" in e["event"]]
        assert len(warnings) == 1 and "allkeys-lru" in warnings[0]["detail"]
        assert (await ReadinessChecks(redis=client, redis_allow_eviction=True).run())["redis"] == "ok"
        strict = ReadinessChecks(redis=client)
        assert "maxmemory-policy allkeys-lru" in (await strict.run())["redis"]
        await admin.config_set("maxmemory-policy", "noeviction")  # fixed at run time: ready again
        assert (await strict.run())["redis"] == "ok"
        await admin.config_set("maxmemory-policy", "volatile-lfu")  # broken at run time: unready
        assert "maxmemory-policy volatile-lfu" in (await strict.run())["redis"]
    finally:
        await close_redis_client(client)


async def test_cluster_setting_must_match_the_server(
    private_server: EmbeddedRedis, redis_cluster_nodes: list[tuple[str, int]]
) -> None:
    host, port = redis_cluster_nodes[0]
    with pytest.raises(ConfigurationError, match="FOCAL_REDIS__CLUSTER=true"):
        await create_redis_client(f"redis://{host}:{port}/0", RedisSettings(cluster=False))
    with pytest.raises(ConfigurationError, match="FOCAL_REDIS__CLUSTER=false"):
        await create_redis_client(private_server.url, RedisSettings(cluster=True))


async def test_a_full_server_still_serves_idle_sessions_read_only(
    private_server: EmbeddedRedis, admin: Redis
) -> None:
    """maxmemory reached under noeviction: the server refuses every write that needs memory.
    Reading an idle session needs a promotion write; ``get`` returns the persistent copy anyway
    (logged once), saves fail loudly, and once memory is back the next save ends the episode."""
    client = await create_redis_client(private_server.url, RedisSettings())
    try:
        store = make_store(client)
        tenant = new_tenant()
        idle = [await store.save(session(tenant)) for _ in range(3)]
        for s in idle:
            assert await store.demote_to_persistent(tenant, s.session_id)
        used = int((await admin.info("memory"))["used_memory"])
        await admin.config_set("maxmemory", used // 2)
        with capture_logs() as logs:
            assert [await store.get(tenant, s.session_id) for s in idle] == idle
            assert [await store.get(tenant, s.session_id) for s in idle] == idle
        refusals = [e for e in logs if "refused a promotion" in e["event"]]
        assert len(refusals) == 1 and "OOM" in refusals[0]["error"]
        assert not await admin.exists(*(store.keys.hot(s.session_id) for s in idle))  # not promoted
        assert await store.list_by_agent(tenant, idle[0].agent_id) == [idle[0]]
        with pytest.raises(StoreError, match="used memory > 'maxmemory'"):
            await store.save(idle[0])
        assert await store.get(tenant, idle[0].session_id) == idle[0]  # the refused save wrote nothing
        await admin.config_set("maxmemory", 0)
        saved = await store.save(idle[0])
        assert await store.get(tenant, saved.session_id) == saved
        await admin.config_set("maxmemory", used // 2)
        with capture_logs() as logs:
            assert await store.get(tenant, idle[1].session_id) == idle[1]
        assert len([e for e in logs if "refused a promotion" in e["event"]]) == 1  # a new episode
    finally:
        await close_redis_client(client)
