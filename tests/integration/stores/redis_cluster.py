"""A three-node Redis Cluster on loopback for tests, plus session fixtures that start it lazily.

Each node is an ``EmbeddedRedis`` (``redis-server`` or the wheel's ``valkey-server``) with cluster
mode on and an explicit cluster-bus port (the default, port + 10000, overflows for ephemeral ports).
The slots are split in three ranges with ``CLUSTER ADDSLOTSRANGE``, the nodes are joined with
``CLUSTER MEET``, and the fixture waits (bounded) until every node reports ``cluster_state:ok`` and
knows all three masters. No replicas: the tests need slot routing and cross-slot rules, not failover.

Import the fixtures into the test module that needs them (``from tests.integration.stores.redis_cluster
import redis_cluster, redis_cluster_client, redis_cluster_nodes``); they start nothing until a test
requests them, and every importing module shares the one cluster.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from focal.db.embedded import LOOPBACK, EmbeddedRedis, free_port

CLUSTER_SLOTS = 16384
NODE_COUNT = 3
READY_TIMEOUT_SECONDS = 30.0


class ClusterNodeServer(EmbeddedRedis):
    """An embedded Redis-protocol server started in cluster mode (no persistence)."""

    name = "redis-cluster-node"

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, persistence=False)
        self.bus_port = free_port()

    def _command(self, port: int) -> list[str]:
        return [
            *super()._command(port),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.data_dir / "nodes.conf"),
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip


class LocalRedisCluster:
    """Start, join and stop ``NODE_COUNT`` cluster nodes under ``base_dir``."""

    def __init__(self, base_dir: Path, node_count: int = NODE_COUNT) -> None:
        self.nodes = [ClusterNodeServer(base_dir / f"node{i}") for i in range(node_count)]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(LOOPBACK, node.port) for node in self.nodes]

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            self._assign_slots_and_meet()
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def node_at(self, port: int) -> ClusterNodeServer:
        """The node listening on ``port``."""
        return next(node for node in self.nodes if node.port == port)

    def _client(self, node: ClusterNodeServer) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=node.port, socket_timeout=5.0)

    def _assign_slots_and_meet(self) -> None:
        count = len(self.nodes)
        for index, node in enumerate(self.nodes):
            first = index * CLUSTER_SLOTS // count
            last = (index + 1) * CLUSTER_SLOTS // count - 1
            with self._client(node) as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        with self._client(self.nodes[0]) as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER", "MEET", LOOPBACK, node.port, node.bus_port)

    def _wait_until_ok(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            if all(self._node_ready(node) for node in self.nodes):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster not ok after {READY_TIMEOUT_SECONDS:.0f}s")
            time.sleep(0.05)

    def _node_ready(self, node: ClusterNodeServer) -> bool:
        with self._client(node) as client:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            masters = client.execute_command("CLUSTER", "NODES")
            lines = (masters.decode() if isinstance(masters, bytes) else str(masters)).splitlines()
        known = sum(1 for line in lines if "master" in line and "fail" not in line)
        return "cluster_state:ok" in text and known == len(self.nodes)


class _SharedCluster:
    """One cluster per test session, however many modules import the fixtures.

    pytest registers an imported fixture once per importing module, so two modules would each
    get their own session fixture instance; they share this cluster, reference-counted, and the
    last one to finish stops it."""

    cluster: LocalRedisCluster | None = None
    users = 0

    @classmethod
    def acquire(cls, tmp_path_factory: pytest.TempPathFactory) -> LocalRedisCluster:
        if cls.cluster is None:
            cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
            cluster.start()
            cls.cluster = cluster
        cls.users += 1
        return cls.cluster

    @classmethod
    def release(cls) -> None:
        cls.users -= 1
        if cls.users == 0 and cls.cluster is not None:
            cls.cluster.stop()
            cls.cluster = None


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """The three-node cluster itself (its node processes, e.g. to stall one), stopped at the end.

    Tests that change a node (stop it, change a slot's state or a setting) restore it in a
    ``finally``: the cluster is shared by every test of the session."""
    cluster = _SharedCluster.acquire(tmp_path_factory)
    try:
        yield cluster
    finally:
        _SharedCluster.release()


@pytest.fixture(scope="session")
def redis_cluster_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, int]]]:
    """``(host, port)`` of every node of the three-node cluster (self-contained, so a module may
    import this fixture alone)."""
    cluster = _SharedCluster.acquire(tmp_path_factory)
    try:
        yield cluster.startup_nodes
    finally:
        _SharedCluster.release()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_cluster_client(redis_cluster_nodes: list[tuple[str, int]]) -> AsyncIterator[RedisCluster]:
    """A ``redis.asyncio.RedisCluster`` on the test cluster, closed at the end."""
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in redis_cluster_nodes],
        max_connections=64,
    )
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()
