"""Checks that a Redis deployment can keep Focal's sessions: run at start-up and by ``/ready``.

- **Version**: Redis 7.0+ (Valkey reports a compatible ``redis_version``): the scripts use
  ``PEXPIRETIME``, ``ZADD GT`` and ``SET KEEPTTL``.
- **Mode**: a cluster-enabled server behind ``cluster=false`` would answer every other key with
  ``MOVED``; refused with the setting that fixes it.
- **Eviction**: every node must run ``maxmemory-policy noeviction``. Any other policy lets the
  server delete keys to make room: ``allkeys-*`` picks any key, and ``volatile-*`` picks among keys
  with a TTL, which is every key Focal writes. Acknowledged sessions then vanish without an error
  (measured: about 1,260 of 1,500 with ``maxmemory 2mb`` and ``allkeys-lru``). With
  ``noeviction`` a full server refuses writes instead, loudly, and reads still work.
  ``allow_eviction=true`` accepts the risk; the check then returns warnings to log.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster

from focal.errors import ConfigurationError

MIN_REDIS_VERSION = (7, 0)
SAFE_POLICY = "noeviction"


async def _node_infos(client: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(node name, INFO)`` of the server, or of every primary of a cluster."""
    if isinstance(client, RedisCluster):
        return [(node.name, await client.info(target_nodes=node)) for node in client.get_primaries()]
    return [("server", await client.info())]


def _version(info: dict[str, Any]) -> tuple[int, ...]:
    raw = str(info.get("redis_version", "0"))
    try:
        return tuple(int(part) for part in raw.split(".")[:2])
    except ValueError:
        return (0,)


async def check_redis_server(client: Any, *, allow_eviction: bool) -> list[str]:
    """Raise ``ConfigurationError`` naming the setting and the fix when the server cannot keep
    sessions safely; return warnings (evicting nodes accepted by ``allow_eviction``) to log."""
    cluster_client = isinstance(client, RedisCluster)
    warnings: list[str] = []
    for name, info in await _node_infos(client):
        if _version(info) < MIN_REDIS_VERSION:
            raise ConfigurationError(
                f"Redis {info.get('redis_version')} at {name} is too old: Focal needs Redis 7.0+ "
                "(or Valkey 7.2+)"
            )
        if not cluster_client and str(info.get("cluster_enabled", 0)) == "1":
            raise ConfigurationError(
                "the Redis server has cluster mode enabled but FOCAL_REDIS__CLUSTER is false: set "
                "FOCAL_REDIS__CLUSTER=true (keys of one session or tenant live on one node of a cluster)"
            )
        policy = info.get("maxmemory_policy")
        if policy == SAFE_POLICY:
            continue
        problem = (
            f"Redis at {name} has maxmemory-policy {policy or 'unknown'}: it may evict session keys "
            "when memory runs short, losing acknowledged sessions without an error"
        )
        if not allow_eviction:
            raise ConfigurationError(
                f"{problem}. Set `maxmemory-policy noeviction` on every node (redis.conf, or "
                "CONFIG SET maxmemory-policy noeviction), or set FOCAL_REDIS__ALLOW_EVICTION=true "
                "to accept the risk"
            )
        warnings.append(f"{problem} (accepted: FOCAL_REDIS__ALLOW_EVICTION=true)")
    return warnings
