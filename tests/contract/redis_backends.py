"""Redis clients for the contract suites of the Redis-backed helpers (idempotency keys,
conversation locks): a single server and the three-node cluster, both started lazily.

Import the fixtures into the test module (``from tests.contract.redis_backends import ...``);
``build(request, kind)`` picks the client for a backend param.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis

from tests.integration.stores.redis_cluster import redis_cluster_client, redis_cluster_nodes

__all__ = [
    "REDIS_BACKENDS",
    "redis_client_for",
    "redis_cluster_client",
    "redis_cluster_nodes",
    "shared_redis",
]

REDIS_BACKENDS = [
    "inmemory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_redis(redis_url: str) -> AsyncIterator[Redis]:
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=10)
    client = Redis(connection_pool=pool)
    try:
        yield client
    finally:
        await client.aclose()
        await pool.aclose()


def redis_client_for(request: pytest.FixtureRequest, backend: str) -> Any:
    """The client of a Redis backend param (call from a synchronous fixture)."""
    if backend == "redis":
        return request.getfixturevalue("shared_redis")
    if backend == "redis-cluster":
        return request.getfixturevalue("redis_cluster_client")
    raise AssertionError(f"no Redis client for backend {backend}")
