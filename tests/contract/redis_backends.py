"""Redis clients for the contract suites of the Redis-backed helpers (idempotency keys,
conversation locks): a single server and the three-node cluster, both started lazily.

Import the fixtures into the test module (``from tests.contract.redis_backends import ...``);
``build(request, kind)`` picks the client for a backend param.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.stores.redis_cluster import redis_cluster_client, redis_cluster_nodes

__all__ = [
    "REDIS_BACKENDS",
    "redis_client_for",
    "redis_cluster_client",
    "redis_cluster_nodes",
]

REDIS_BACKENDS = [
    "inmemory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]


def redis_client_for(request: pytest.FixtureRequest, backend: str) -> Any:
    """The client of a Redis backend param (call from a synchronous fixture)."""
    if backend == "redis":
        return request.getfixturevalue("redis_client")
    if backend == "redis-cluster":
        return request.getfixturevalue("redis_cluster_client")
    raise AssertionError(f"no Redis client for backend {backend}")
