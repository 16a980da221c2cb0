"""The production IdempotencyStore: the session Redis (standalone or cluster), one hash per key.

Key: ``<prefix>:idem:<tenant_id>:<sha256(scope, key)>`` (a hash, so any key a client sends fits a
fixed-length name; one key per operation, so every slot of a cluster works). Fields: ``state``
(``pending`` | ``done``), ``fp`` (the request's fingerprint), ``token`` (the reservation's),
and once done ``status``, ``headers`` (JSON) and ``body`` (base64, so a client with
``decode_responses=True`` reads it too). The key's TTL is the in-flight time while pending, then
the replay TTL.

Every change is one Lua script, so check and write are atomic, and each is safe to re-send (the
client retries a command whose reply was lost): a re-sent reservation finds its own token and
reports ``STARTED`` again, a re-sent completion finds ``done`` with its token and reports success,
a re-sent release finds nothing to release.

Durability is the session store's: Focal refuses to start unless every node runs ``maxmemory-policy
noeviction`` (``redis_server.py``), so a stored response is never silently evicted; a full server
refuses the reservation loudly (503) instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from uuid import UUID, uuid4

from redis.asyncio.cluster import RedisCluster

from focal.conversation.stores.redis_errors import OperationGate
from focal.conversation.stores.redis_keys import SessionKeys, text
from focal.conversation.stores.redis_scripts import LuaScript
from focal.errors import ConfigurationError, StoreError
from focal.idempotency.store import (
    IdempotencyStore,
    Reservation,
    ReservationOutcome,
    StoredResponse,
    check_key,
    check_reserve,
    check_response,
    check_seconds,
)

_RESERVE = LuaScript(
    """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'fp', ARGV[1], 'token', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1}
end
local stored = redis.call('HMGET', KEYS[1], 'fp', 'token', 'status', 'headers', 'body')
if stored[1] ~= ARGV[1] then return {3} end
if state == 'pending' then
  if stored[2] == ARGV[2] then return {1} end
  return {2}
end
return {4, stored[3], stored[4], stored[5]}
"""
)
_COMPLETE = LuaScript(
    """
local stored = redis.call('HMGET', KEYS[1], 'state', 'token')
if stored[2] ~= ARGV[1] then return 0 end
if stored[1] == 'done' then return 1 end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'headers', ARGV[3], 'body', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
)
_RELEASE = LuaScript(
    """
local stored = redis.call('HMGET', KEYS[1], 'state', 'token')
if stored[1] ~= 'pending' or stored[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
)
_OUTCOMES = {
    1: ReservationOutcome.STARTED,
    2: ReservationOutcome.IN_PROGRESS,
    3: ReservationOutcome.MISMATCH,
    4: ReservationOutcome.REPLAY,
}


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisIdempotencyStore(IdempotencyStore):
    """On the client ``focal.bootstrap.create_redis_client`` builds (the session store's); never
    closes it. ``operation_timeout_seconds`` bounds each operation (then ``StoreConnectionError``);
    ``max_concurrent_operations`` makes callers wait for a slot (a cluster's per-node cap)."""

    def __init__(
        self,
        client: Any,
        *,
        key_prefix: str = "focal",
        operation_timeout_seconds: float = 5.0,
        max_concurrent_operations: int | None = None,
    ) -> None:
        SessionKeys(key_prefix)  # the same rules for the prefix (non-empty, no hash-tag braces)
        try:
            check_seconds(operation_timeout_seconds, "operation_timeout_seconds")
        except StoreError as exc:
            raise ConfigurationError(str(exc)) from exc
        self._client = client
        self._prefix = key_prefix
        if isinstance(client, RedisCluster) and max_concurrent_operations is None:
            max_concurrent_operations = 100  # redis-py's default per-node connection cap
        self._gate = OperationGate(
            timeout_seconds=operation_timeout_seconds, max_concurrent=max_concurrent_operations
        )

    def key(self, tenant_id: UUID, scope: str, key: str) -> str:
        digest = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
        return f"{self._prefix}:idem:{tenant_id}:{digest}"

    async def reserve(
        self, tenant_id: UUID, scope: str, key: str, fingerprint: str, *, in_flight_seconds: float
    ) -> Reservation:
        check_reserve(scope, key, fingerprint, in_flight_seconds)
        token = uuid4().hex
        async with self._gate("idempotency.reserve", tenant_id):
            reply = await _RESERVE(
                self._client, 1, self.key(tenant_id, scope, key),
                fingerprint, token, _milliseconds(in_flight_seconds),
            )  # fmt: skip
        outcome = _OUTCOMES.get(int(reply[0]))
        if outcome is None:
            raise StoreError(f"unexpected idempotency reply {reply[0]!r}")
        if outcome is ReservationOutcome.STARTED:
            return Reservation(outcome, token=token)
        if outcome is ReservationOutcome.REPLAY:
            return Reservation(outcome, response=_decode(reply[1], reply[2], reply[3]))
        return Reservation(outcome)

    async def complete(
        self,
        tenant_id: UUID,
        scope: str,
        key: str,
        token: str,
        response: StoredResponse,
        *,
        ttl_seconds: float,
    ) -> bool:
        check_key(key)
        check_response(response, ttl_seconds)
        headers = json.dumps([list(pair) for pair in response.headers])
        body = base64.b64encode(response.body)
        async with self._gate("idempotency.complete", tenant_id):
            done = await _COMPLETE(
                self._client, 1, self.key(tenant_id, scope, key),
                token, response.status, headers, body, _milliseconds(ttl_seconds),
            )  # fmt: skip
        return bool(done)

    async def release(self, tenant_id: UUID, scope: str, key: str, token: str) -> bool:
        check_key(key)
        async with self._gate("idempotency.release", tenant_id):
            released = await _RELEASE(self._client, 1, self.key(tenant_id, scope, key), token)
        return bool(released)


def _decode(status: Any, headers: Any, body: Any) -> StoredResponse:
    try:
        pairs = json.loads(text(headers))
        return StoredResponse(
            status=int(status),
            headers=tuple((str(name), str(value)) for name, value in pairs),
            body=base64.b64decode(body, validate=True),
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(f"a stored idempotent response is unreadable: {exc}") from exc
