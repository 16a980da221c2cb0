"""Lua scripts of the Redis session store: every change to a session's two tiers is one script.

A session's keys are ``<prefix>:s:{<session_id>}:hot`` (KEYS[1]) and ``<prefix>:s:{<session_id>}:persist``
(KEYS[2]). The shared ``{...}`` hash tag puts both in one cluster slot, so each script touches one
node and runs atomically: a version check and the write of both tiers can never be split, and a
promotion never races a save.

Stored payloads are JSON objects that start with ``{"version":N,"tenant_id":"<uuid>",``. The
scripts read the version and tenant from that fixed prefix with one anchored ``string.match``
instead of decoding up to a megabyte of JSON on the server's only thread.

The hot key's TTL is ``min(hot TTL, remaining TTL of the persistent key)``: a hot copy never
outlives the session's max age. The persistent key's TTL is set once, when the session is created
(``created_at + max age``), and kept on every later save (``KEEPTTL``), so the max age cannot be
extended by saving.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic_core import PydanticSerializationError
from redis import exceptions as redis_exceptions

from focal.conversation.models import Session
from focal.conversation.stores.session_codec import parse_session, require_aware_created_at
from focal.errors import InvalidDataError

_HEADER_FIELDS = {"version", "tenant_id", "last_activity_at"}


def encode_next_version(session: Session, now: datetime) -> tuple[bytes, Session]:
    """The JSON (UTF-8 bytes) to store for a save of ``session`` and the session it decodes to.

    The stored version is ``session.version + 1`` and ``last_activity_at`` is ``now``; ``version``
    and ``tenant_id`` come first so that the scripts' ``header`` finds them. The payload is
    parsed back with full validation, which also yields the copy ``save`` returns: one JSON
    encode and one validating decode per save (objects built with ``model_construct`` or holding
    values JSON cannot encode are refused here with ``InvalidDataError``).

    The body is serialised straight to bytes by pydantic-core (what ``model_dump_json`` does before
    decoding to ``str``): the size cap is then ``len(payload)`` and redis-py sends the bytes as they
    are, where a ``str`` payload would be encoded again for each of the two.
    """
    version, tenant_id = session.version, session.tenant_id
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise InvalidDataError(f"session {session.session_id}: version must be an integer >= 0")
    if not isinstance(tenant_id, UUID):  # the header must hold the canonical form the scripts compare
        raise InvalidDataError(f"session {session.session_id}: tenant_id must be a UUID")
    try:
        body = session.__pydantic_serializer__.to_json(session, exclude=_HEADER_FIELDS)
    except (PydanticSerializationError, AttributeError, TypeError, ValueError) as exc:
        raise InvalidDataError(f"session {session.session_id} cannot be serialised: {exc}") from exc
    head = f'{{"version":{version + 1},"tenant_id":"{tenant_id}","last_activity_at":"{now.isoformat()}",'
    payload = b"".join((head.encode(), memoryview(body)[1:]))
    return payload, require_aware_created_at(parse_session(payload))


_FUNCTIONS = """
local function header(payload)
  local version, tenant = string.match(payload, '^{"version":(%d+),"tenant_id":"([^"]*)"')
  return tonumber(version), tenant
end

local function hot_ttl(persist_key, wanted)
  local left = redis.call('PTTL', persist_key)
  if left > 0 and left < wanted then return left end
  return wanted
end

-- Version and tenant check, then write-through of both tiers.
-- Returns 1, new version | 0, stored version (stale) | -1, 0 (other tenant) | -2, 0 (corrupt).
local function save_tiers(hot, persist, expected, tenant, payload, hot_ms, create_persist_ms)
  local current = redis.call('GET', persist)
  if current then
    local version, owner = header(current)
    if version == nil then return -2, 0 end
    if owner ~= tenant then return -1, 0 end
    if version ~= expected then return 0, version end
    redis.call('SET', persist, payload, 'KEEPTTL')
  else
    if expected ~= 0 then return 0, 0 end
    redis.call('SET', persist, payload, 'PX', create_persist_ms)
  end
  redis.call('SET', hot, payload, 'PX', hot_ttl(persist, hot_ms))
  return 1, expected + 1
end

-- KEYS[first .. #KEYS]: the sorted-set indexes (``ranked`` of them, at least the agent and
-- channel ones), then the step set if any, then the tenant's index registry (last). ZADD GT keeps
-- the newest score when the index updates of two saves arrive out of order. The registry gets
-- all index keys in one SADD.
local function index_session(first, member, score, ttl, ranked)
  local registry = KEYS[#KEYS]
  for i = first, #KEYS - 1 do
    if i - first < ranked then
      redis.call('ZADD', KEYS[i], 'GT', score, member)
    else
      redis.call('SADD', KEYS[i], member)
    end
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
  redis.call('SADD', registry, unpack(KEYS, first, #KEYS - 1))
  redis.call('PEXPIRE', registry, ttl)
end
"""

# KEYS: hot, persist. ARGV: expected version, tenant id, payload, hot TTL ms, persist TTL ms (used
# only when the session is created).
_SAVE_SESSION_LUA = (
    _FUNCTIONS
    + """
local status, info = save_tiers(
  KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5])
return {status, info}
"""
)

# KEYS: index keys, registry last (all in the tenant's slot). ARGV: session id, score (last
# activity, epoch microseconds), index TTL ms, number of sorted sets among the keys.
_INDEX_SESSION_LUA = (
    _FUNCTIONS
    + """
index_session(1, ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
return 1
"""
)

# Standalone servers only (the keys span two cluster slots): both of the above in one round trip,
# the indexes updated only when the save succeeded. KEYS: hot, persist, index keys, registry.
# ARGV: the five of SAVE_SESSION, then the four of INDEX_SESSION.
_SAVE_AND_INDEX_LUA = (
    _FUNCTIONS
    + """
local status, info = save_tiers(
  KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5])
if status == 1 then index_session(3, ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])) end
return {status, info}
"""
)

# KEYS: hot, persist. ARGV: tenant id, hot TTL ms, "1" to return the payload or "0" to return 1.
# A hot hit slides the hot TTL; a miss promotes the persistent copy. Nil when absent/other tenant.
_GET_AND_PROMOTE_LUA = (
    _FUNCTIONS
    + """
local payload = redis.call('GET', KEYS[1])
local promoted = false
if not payload then
  payload = redis.call('GET', KEYS[2])
  promoted = true
end
if not payload then return false end
local _, tenant = header(payload)
if tenant ~= ARGV[1] then return false end
local ttl = hot_ttl(KEYS[2], tonumber(ARGV[2]))
if promoted then
  redis.call('SET', KEYS[1], payload, 'PX', ttl)
else
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if ARGV[3] == '1' then return payload end
return 1
"""
)

# KEYS: hot, persist. ARGV: tenant id. Drops the hot copy only; 1 when the session exists for
# this tenant, else 0.
_DEMOTE_LUA = (
    _FUNCTIONS
    + """
local payload = redis.call('GET', KEYS[2])
if not payload then return 0 end
local _, tenant = header(payload)
if tenant ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
)

# KEYS: hot, persist. ARGV: tenant id. Deletes both tiers; returns the deleted payload (for index
# clean-up) or nil.
_DELETE_SESSION_LUA = (
    _FUNCTIONS
    + """
local payload = redis.call('GET', KEYS[2]) or redis.call('GET', KEYS[1])
if not payload then return false end
local _, tenant = header(payload)
if tenant ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1], KEYS[2])
return payload
"""
)


class LuaScript:
    """A script run with EVALSHA, falling back to EVAL when the node has not cached it yet.

    Works the same on ``redis.asyncio.Redis`` and ``RedisCluster`` (which routes by the keys, so
    all keys of one call must share a slot). redis-py's ``register_script`` is not used because on
    a cluster its ``SCRIPT LOAD`` may reach a different node than the one owning the keys.

    Called as ``script(client, numkeys, *keys, *args)``, the arguments passed through unchanged
    (no list to build per call); the SHA is kept as bytes, which redis-py sends without encoding.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._sha_bytes = self.sha.encode()

    async def __call__(self, client: Any, numkeys: int, *keys_and_args: str | bytes | int) -> Any:
        try:
            return await client.evalsha(self._sha_bytes, numkeys, *keys_and_args)
        except redis_exceptions.NoScriptError:
            return await client.eval(self.source, numkeys, *keys_and_args)


SAVE_SESSION = LuaScript(_SAVE_SESSION_LUA)
INDEX_SESSION = LuaScript(_INDEX_SESSION_LUA)
SAVE_AND_INDEX = LuaScript(_SAVE_AND_INDEX_LUA)
GET_AND_PROMOTE = LuaScript(_GET_AND_PROMOTE_LUA)
DEMOTE = LuaScript(_DEMOTE_LUA)
DELETE_SESSION = LuaScript(_DELETE_SESSION_LUA)
