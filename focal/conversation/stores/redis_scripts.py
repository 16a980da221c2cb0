"""Lua scripts of the Redis session store: every change to a session's tiers is one script.

A session's keys are ``<prefix>:s:{<session_id>}:hot`` (KEYS[1]) and ``<prefix>:s:{<session_id>}:persist``
(KEYS[2]). The shared ``{...}`` hash tag puts both in one cluster slot, so each script touches one
node and runs atomically: a version check and the write of both tiers can never be split, and a
promotion never races a save.

Stored payloads are JSON objects that start with ``{"version":N,"tenant_id":"<uuid>",``. The
scripts read the version and tenant from that fixed prefix with one anchored ``string.match``
instead of decoding up to a megabyte of JSON on the server's only thread. A payload without that
header is *corrupt*: get, save and delete all report it the same way (status -2).

Expiry rules (Redis 7.0+: ``PEXPIRETIME``):

- The persistent key's TTL is set once, when the session is created (``created_at + max age``),
  and kept on every later save (``KEEPTTL``), so the max age cannot be extended by saving.
- A persistent copy that is gone or in its last millisecond (``PTTL`` 0) is gone: the session no
  longer exists, and a hot copy without its persistent copy (evicted or expired) is deleted, never
  returned or re-armed.
- The hot key expires at ``min(now + hot TTL, expiry of the persistent key)``, written as an
  absolute time (``PXAT``) derived from the persistent key's own expiry, so it can never expire
  even a millisecond after it.

Every script is safe to send twice (the clients retry after a lost connection or a timeout, when
the first attempt may have run): a save whose exact payload is already stored reports success (the
payload carries the new version and a microsecond timestamp, so equal bytes mean the stored state
*is* this save's result); a delete leaves a one-minute tombstone with the caller's token so its
re-send still reports what it deleted; promotion, demotion and index updates are idempotent.

Index scores: the agent and customer indexes are scored by last activity (epoch microseconds, what
their lists are ordered by); the channel and step indexes, and the tenant's registry, by *tick*,
the tenant's save sequence (see ``redis_keys``). Every index update is ``ZADD GT``: an update of
an older save, arriving late, never overwrites a newer one. Each update also trims, from the keys
it touches, the entries whose score is more than the max age old (their sessions have expired),
so an index that is written forever stays bounded.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic_core import PydanticSerializationError
from redis import exceptions as redis_exceptions

from focal.conversation.models import Session
from focal.conversation.stores.session_codec import (
    check_session_storable,
    parse_session,
    require_aware_created_at,
)
from focal.errors import InvalidDataError

_HEADER_FIELDS = {"version", "tenant_id", "last_activity_at"}

# Script statuses (first element of the replies that carry one).
SAVED, STALE, OTHER_TENANT, CORRUPT = 1, 0, -1, -2


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
    check_session_storable(session)  # NaN would be written as null
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

-- Integers beyond 2^31 (epoch milli- and microseconds) must reach Redis as exact decimal strings.
local function int(n)
  return string.format('%.0f', n)
end

-- How a hot copy written now must expire: 'PXAT', min(now + hot TTL, expiry of the persistent
-- copy); or 'PX', hot TTL when the persistent copy has no expiry (not written by Focal). Nil when
-- the persistent copy is gone or in its last millisecond: then the session is gone.
local function hot_expiry(persist, hot_ms)
  local left = redis.call('PTTL', persist)
  if left == -1 then return 'PX', hot_ms end
  if left <= 0 then return nil end
  local persist_at = redis.call('PEXPIRETIME', persist)
  if left <= hot_ms then return 'PXAT', persist_at end
  return 'PXAT', persist_at - left + hot_ms
end

-- Version and tenant check, then write-through of both tiers.
-- Returns 1, new version | 0, stored version (stale) | -1, 0 (other tenant) | -2, 0 (corrupt).
local function save_tiers(hot, persist, expected, tenant, payload, hot_ms, create_persist_ms)
  local current = redis.call('GET', persist)
  if current and redis.call('PTTL', persist) == 0 then current = false end
  if current then
    if current == payload then return 1, expected + 1 end  -- a re-send of this very save
    local version, owner = header(current)
    if version == nil then return -2, 0 end
    if owner ~= tenant then return -1, 0 end
    if version ~= expected then return 0, version end
    redis.call('SET', persist, payload, 'KEEPTTL')
    if redis.call('PTTL', persist) == -1 then redis.call('PEXPIRE', persist, create_persist_ms) end
  else
    if expected ~= 0 then return 0, 0 end
    redis.call('SET', persist, payload, 'PX', create_persist_ms)
  end
  local mode, at = hot_expiry(persist, hot_ms)
  if mode then
    redis.call('SET', hot, payload, mode, int(at))
  else
    redis.call('DEL', hot)
  end
  return 1, expected + 1
end

-- The tenant's next tick: server time in microseconds, at least one more than the last tick.
local function next_tick(clock, ttl_ms)
  local now = redis.call('TIME')
  local tick = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local last = tonumber(redis.call('GET', clock) or '0')
  if tick <= last then tick = last + 1 end
  redis.call('SET', clock, int(tick), 'PX', ttl_ms)
  return tick
end

-- KEYS[first .. #KEYS - 2]: the indexes scored by last activity (``by_activity`` of them), then
-- those scored by tick; KEYS[#KEYS - 1]: the tenant's registry; KEYS[#KEYS]: the tenant's clock.
local function index_session(first, member, activity, by_activity, ttl_ms, max_age_us, tick)
  local registry = KEYS[#KEYS - 1]
  local tick_score = int(tick)
  local tick_cutoff = '(' .. int(tick - max_age_us)
  local activity_cutoff = '(' .. int(tonumber(activity) - max_age_us)
  local listed = {}  -- registry entries: every index key at this tick, added in one ZADD
  for i = first, #KEYS - 2 do
    local score, cutoff = tick_score, tick_cutoff
    if i - first < by_activity then score, cutoff = activity, activity_cutoff end
    redis.call('ZADD', KEYS[i], 'GT', score, member)
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', cutoff)
    redis.call('PEXPIRE', KEYS[i], ttl_ms)
    listed[#listed + 1] = tick_score
    listed[#listed + 1] = KEYS[i]
  end
  redis.call('ZADD', registry, 'GT', unpack(listed))
  redis.call('ZREMRANGEBYSCORE', registry, '-inf', tick_cutoff)
  redis.call('PEXPIRE', registry, ttl_ms)
end
"""

# KEYS: the tenant's clock. ARGV: its TTL ms. Returns the tick (an integer).
_TICK_LUA = (
    _FUNCTIONS
    + """
return next_tick(KEYS[1], ARGV[1])
"""
)

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

# KEYS: see ``index_session``. ARGV: session id, last activity (epoch microseconds), how many keys
# are scored by activity, index TTL ms, max age in microseconds, the save's tick.
_INDEX_SESSION_LUA = (
    _FUNCTIONS
    + """
index_session(1, ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
return 1
"""
)

# Standalone servers only (the keys span two cluster slots): both of the above in one round trip,
# the indexes updated only when the save succeeded, the tick taken in the same atomic step.
# KEYS: hot, persist, then those of ``index_session``. ARGV: the five of SAVE_SESSION, then the
# first five of INDEX_SESSION.
_SAVE_AND_INDEX_LUA = (
    _FUNCTIONS
    + """
local status, info = save_tiers(
  KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5])
if status == 1 then
  local tick = next_tick(KEYS[#KEYS], ARGV[9])
  index_session(3, ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10]), tick)
end
return {status, info}
"""
)

# KEYS: hot, persist. ARGV: tenant id, hot TTL ms, "1" to return the payload or "0" to return 1.
# A hot hit slides the hot TTL; a miss promotes the persistent copy. Returns false when absent or
# of another tenant; {-2} when corrupt; {payload or 1, error} when the promotion write was refused
# (out of memory under noeviction): the persistent copy is still returned, read-only.
_GET_AND_PROMOTE_LUA = (
    _FUNCTIONS
    + """
local mode, at = hot_expiry(KEYS[2], tonumber(ARGV[2]))
if not mode then
  redis.call('DEL', KEYS[1])  -- a hot copy without its persistent copy is gone too
  return false
end
local payload = redis.call('GET', KEYS[1])
local promote = not payload
if promote then payload = redis.call('GET', KEYS[2]) end
local version, tenant = header(payload)
if version == nil then return {-2} end
if tenant ~= ARGV[1] then return false end
local result = 1
if ARGV[3] == '1' then result = payload end
if promote then
  local written = redis.pcall('SET', KEYS[1], payload, mode, int(at))
  if type(written) == 'table' and written.err then return {result, written.err} end
elseif mode == 'PXAT' then
  redis.call('PEXPIREAT', KEYS[1], int(at))
else
  redis.call('PEXPIRE', KEYS[1], int(at))
end
return result
"""
)

# KEYS: hot, persist. ARGV: tenant id. Drops the hot copy only; 1 when the session exists for
# this tenant, 0 when not, -2 when corrupt.
_DEMOTE_LUA = (
    _FUNCTIONS
    + """
local payload = redis.call('GET', KEYS[2])
if not payload or redis.call('PTTL', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
local version, tenant = header(payload)
if version == nil then return -2 end
if tenant ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
)

# KEYS: hot, persist, tombstone. ARGV: tenant id, the caller's token, tombstone TTL ms. Deletes both
# tiers and returns {1, deleted payload} (for the index clean-up); false when there is nothing to
# delete for this tenant; {-2} when corrupt. A re-send after a delete that committed finds the
# tombstone with its own token and returns the same answer.
_DELETE_SESSION_LUA = (
    _FUNCTIONS
    + """
local payload = redis.call('GET', KEYS[2])
if not payload or redis.call('PTTL', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])  -- an orphan hot copy is not a session
  local tomb = redis.call('GET', KEYS[3])
  if tomb and string.sub(tomb, 1, #ARGV[2]) == ARGV[2] then
    return {1, string.sub(tomb, #ARGV[2] + 1)}
  end
  return false
end
local version, tenant = header(payload)
if version == nil then return {-2} end
if tenant ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], ARGV[2] .. payload, 'PX', ARGV[3])
return {1, payload}
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


TICK = LuaScript(_TICK_LUA)
SAVE_SESSION = LuaScript(_SAVE_SESSION_LUA)
INDEX_SESSION = LuaScript(_INDEX_SESSION_LUA)
SAVE_AND_INDEX = LuaScript(_SAVE_AND_INDEX_LUA)
GET_AND_PROMOTE = LuaScript(_GET_AND_PROMOTE_LUA)
DEMOTE = LuaScript(_DEMOTE_LUA)
DELETE_SESSION = LuaScript(_DELETE_SESSION_LUA)
