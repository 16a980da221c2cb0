"""The production SessionStore: Redis (or Valkey, standalone or cluster, 7.0+) with two tiers.

Layout and reasons: ``redis_keys.py``; the atomic scripts: ``redis_scripts.py``; index reads:
``redis_reads.py``; error mapping and per-operation bounds: ``redis_errors.py``; the server checks
run at start-up and by ``/ready``: ``redis_server.py``. In short:

- ``save`` checks version and tenant and writes the hot and the persistent copy in ONE Lua script
  (write-through). On a cluster the tenant's tick is taken first and a second script then updates
  the tenant's indexes (all their keys sit in the tenant's slot); on a standalone server it is
  all one script: one round trip, and session and indexes change together. Nothing is lost when
  the hot key expires: that expiry *is* the demotion.
- ``get`` reads the hot tier and slides its TTL; on a miss it promotes the persistent copy, in the
  same script. A hot copy whose persistent copy is gone (evicted, expired, last millisecond) is
  deleted, never returned. When the server refuses the promotion write (maxmemory reached under
  ``noeviction``) ``get`` still returns the persistent copy: reads degrade to read-only, and that is
  logged once until a save succeeds again.
- A session's max age counts from its ``created_at``; the persistent key carries it as its TTL, set
  on creation and kept on later saves. The hot key never expires after the persistent one.
- Every script is safe to re-send (see ``redis_scripts``), so the clients retry after a lost
  connection or a timeout (``create_redis_client``); a re-sent save that already committed reports
  success instead of a ``ConflictError`` against itself. If a cluster's index update fails after
  the session script committed, ``save`` raises ``StoreConnectionError`` although the session is
  stored; a re-read shows the new version, and its next save indexes it.
- Every operation is bounded by ``operation_timeout_seconds`` in total, then
  ``StoreConnectionError``; on a cluster, callers beyond ``max_concurrent_operations`` wait for a
  slot (bounded by the same time) instead of failing with "too many connections".
- Ordering: ``last_activity_at`` comes from this process's clock but never goes back from one
  version to the next (``next_last_activity``); lists are ordered by it. ``get_by_channel`` returns
  the latest *save* by the tenant's tick (server-side sequence), not by anyone's wall clock.
- Index entries are hints verified on read (``redis_reads``); every index update trims entries
  older than the max age from the keys it touches, and ``purge_expired`` sweeps a whole tenant.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, TypeAlias
from uuid import UUID, uuid4

import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from focal.alignment.models import ScopeFilter
from focal.conversation.models import Channel, Session, SessionStatus
from focal.conversation.scope_filter import session_matches_scope_filter
from focal.conversation.stores.redis_errors import OperationGate
from focal.conversation.stores.redis_keys import SessionKeys
from focal.conversation.stores.redis_purge import purge_stale_index_entries
from focal.conversation.stores.redis_reads import IndexReader
from focal.conversation.stores.redis_scripts import (
    CORRUPT,
    DELETE_SESSION,
    DEMOTE,
    GET_AND_PROMOTE,
    INDEX_SESSION,
    OTHER_TENANT,
    SAVE_AND_INDEX,
    SAVE_SESSION,
    STALE,
    TICK,
    encode_next_version,
)
from focal.conversation.stores.session_codec import (
    check_lookup_text,
    epoch_micros,
    is_at_step,
    next_last_activity,
    parse_session,
)
from focal.conversation.stores.store import SessionStore
from focal.errors import (
    ConfigurationError,
    ConflictError,
    InvalidDataError,
    StoreConnectionError,
    StoreError,
)
from focal.logging import get_logger
from focal.models import utc_now
from focal.validation import check_limit

_log = get_logger("focal.conversation.stores.redis")

RedisClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.RedisCluster"

TOMBSTONE_MS = 60_000  # how long a delete's re-send can still learn what it deleted
_MILLISECOND = timedelta(milliseconds=1)


def _positive_finite(name: str, value: object) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _cluster_connection_cap(client: RedisCluster) -> int:
    """The per-node connection cap the cluster client was built with (redis-py's default: 100)."""
    connection_kwargs = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", {})
    cap = connection_kwargs.get("max_connections", 100)
    return cap if isinstance(cap, int) and cap > 0 else 100


class RedisSessionStore(SessionStore):
    """Two-tier session store on redis-py asyncio; see the module docstring for the semantics.

    ``client`` is a ``redis.asyncio.Redis`` (use a ``BlockingConnectionPool``: a plain pool fails
    bursts with "Too many connections") or a ``redis.asyncio.RedisCluster``; build it with
    ``focal.bootstrap.create_redis_client`` for the retry and timeout settings production needs.
    The store never closes it. Either ``decode_responses`` setting works.

    ``max_concurrent_operations`` bounds the operations in flight (callers beyond it wait); by
    default it is the cluster client's per-node connection cap, and unbounded on a single server,
    whose ``BlockingConnectionPool`` makes callers wait by itself.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        hot_ttl_seconds: float = 1800,
        max_age_seconds: float = 604800,
        key_prefix: str = "focal",
        max_session_bytes: int = 1_048_576,
        operation_timeout_seconds: float = 5.0,
        max_concurrent_operations: int | None = None,
    ) -> None:
        hot_ttl = _positive_finite("hot_ttl_seconds", hot_ttl_seconds)
        max_age = _positive_finite("max_age_seconds", max_age_seconds)
        timeout = _positive_finite("operation_timeout_seconds", operation_timeout_seconds)
        if not isinstance(max_session_bytes, int) or max_session_bytes <= 0:
            raise ConfigurationError(f"max_session_bytes must be an integer > 0, got {max_session_bytes!r}")
        if max_concurrent_operations is not None and (
            not isinstance(max_concurrent_operations, int) or max_concurrent_operations <= 0
        ):
            raise ConfigurationError(
                f"max_concurrent_operations must be an integer > 0, got {max_concurrent_operations!r}"
            )
        self._client = client
        self._hot_ttl_ms = max(1, int(hot_ttl * 1000))
        self._max_age_ms = max(1, int(max_age * 1000))
        self._max_session_bytes = max_session_bytes
        # Script arguments that never change, encoded once: redis-py sends bytes as they are.
        self._hot_ttl_arg = str(self._hot_ttl_ms).encode()
        self._max_age_arg = str(self._max_age_ms).encode()
        self._max_age_us_arg = str(self._max_age_ms * 1000).encode()
        self.keys = SessionKeys(key_prefix)
        # A cluster cannot run one script over a session's slot and the tenant's slot, so there
        # a save is three scripts; a standalone server does it all in one atomic round trip.
        self._is_cluster = isinstance(client, RedisCluster)
        if self._is_cluster and max_concurrent_operations is None:
            max_concurrent_operations = _cluster_connection_cap(client)  # type: ignore[arg-type]
        self._gate = OperationGate(timeout_seconds=timeout, max_concurrent=max_concurrent_operations)
        self._read_only = False  # a promotion was refused and no save has succeeded since

    # --- single sessions ------------------------------------------------------------------

    def _refused_promotion(self, tenant_id: UUID, session_id: UUID | str, error: Any) -> None:
        """Log a refused promotion once per episode (until a save succeeds again)."""
        if not self._read_only:
            self._read_only = True
            _log.warning(
                "redis refused a promotion: serving persistent copies read-only until writes succeed",
                tenant_id=str(tenant_id),
                session_id=str(session_id),
                error=error.decode() if isinstance(error, bytes) else str(error),
            )

    async def get(self, tenant_id: UUID, session_id: UUID) -> Session | None:
        async with self._gate("session.get", tenant_id):
            result = await GET_AND_PROMOTE(
                self._client,
                2,
                *self.keys.tier_keys(str(session_id)),
                str(tenant_id),
                self._hot_ttl_arg,
                b"1",
            )
        if not result:
            return None
        if isinstance(result, list):
            if result[0] == CORRUPT:
                raise StoreError(f"stored session {session_id} has an unreadable header")
            self._refused_promotion(tenant_id, session_id, result[1])
            result = result[0]
        try:
            return parse_session(result)
        except InvalidDataError as exc:
            raise StoreError(f"stored session {session_id} is unreadable: {exc}") from exc

    async def save(self, session: Session) -> Session:
        now = next_last_activity(session, utc_now())
        payload, stored = encode_next_version(session, now)
        expected = stored.version - 1
        size = len(payload)  # UTF-8 bytes, as stored
        if size > self._max_session_bytes:
            raise InvalidDataError(
                f"session {stored.session_id} is {size} bytes, over the {self._max_session_bytes}-byte limit"
            )
        age_ms = (now - stored.created_at) // _MILLISECOND
        persist_ttl_ms = min(self._max_age_ms, self._max_age_ms - age_ms)
        if expected == 0 and persist_ttl_ms <= 0:
            raise InvalidDataError(
                f"session {stored.session_id} was created {age_ms} ms ago, past the max age of "
                f"{self._max_age_ms} ms: it cannot be stored"
            )
        session_id, tenant = str(stored.session_id), str(stored.tenant_id)
        hot_key, persist_key = self.keys.tier_keys(session_id)
        index_keys, by_activity = self.keys.index_keys_of(stored, tenant)
        activity = epoch_micros(stored.last_activity_at)
        # Arguments of the scripts (see ``redis_scripts``), passed flat: ``expected`` version,
        # tenant, payload, hot TTL, persist TTL (used on creation only); then for the indexes the
        # member, its activity score, how many indexes are scored by activity, the index TTL, the
        # max age in microseconds (and, on a cluster, the tick taken before the save).
        async with self._gate("session.save", stored.tenant_id):
            if self._is_cluster:
                # The tick comes first: a later save of this session starts after this one
                # committed, so it always gets a larger tick, whatever order the index updates
                # of the two then arrive in.
                tick = await TICK(self._client, 1, index_keys[-1], self._max_age_arg)
                status, info = await SAVE_SESSION(
                    self._client, 2, hot_key, persist_key,
                    expected, tenant, payload, self._hot_ttl_arg, max(1, persist_ttl_ms),
                )  # fmt: skip
                if status == 1:
                    await INDEX_SESSION(
                        self._client, len(index_keys), *index_keys,
                        session_id, activity, by_activity, self._max_age_arg, self._max_age_us_arg, tick,
                    )  # fmt: skip
            else:
                status, info = await SAVE_AND_INDEX(
                    self._client, 2 + len(index_keys), hot_key, persist_key, *index_keys,
                    expected, tenant, payload, self._hot_ttl_arg, max(1, persist_ttl_ms),
                    session_id, activity, by_activity, self._max_age_arg, self._max_age_us_arg,
                )  # fmt: skip
        if status == OTHER_TENANT:
            raise ConflictError(f"session id {stored.session_id} belongs to another tenant")
        if status == CORRUPT:
            raise StoreError(f"stored session {stored.session_id} has an unreadable header")
        if status == STALE:
            raise ConflictError(
                f"session {stored.session_id} is at version {info}, the save was based on version {expected}"
            )
        self._read_only = False
        return stored

    async def delete(self, tenant_id: UUID, session_id: UUID) -> bool:
        hot_key, persist_key = self.keys.tier_keys(str(session_id))
        async with self._gate("session.delete", tenant_id):
            result = await DELETE_SESSION(
                self._client, 3, hot_key, persist_key, self.keys.tombstone(session_id),
                str(tenant_id), uuid4().hex, TOMBSTONE_MS,
            )  # fmt: skip
            if not result:
                return False
            if result[0] == CORRUPT:
                raise StoreError(f"stored session {session_id} has an unreadable header")
            try:
                session = parse_session(result[1])
            except InvalidDataError:  # unreadable body: its index entries are dropped by readers
                return True
            pipe = self._client.pipeline(transaction=False)
            for key in self.keys.indexes_of(session):
                pipe.zrem(key, str(session_id))
            await pipe.execute()
        return True

    async def promote_to_hot(self, tenant_id: UUID, session_id: UUID) -> bool:
        """Put the session in the hot tier (or slide its hot TTL); False if it does not exist.

        ``StoreConnectionError`` when the server refuses the write (out of memory)."""
        async with self._gate("session.promote", tenant_id):
            result = await GET_AND_PROMOTE(
                self._client,
                2,
                *self.keys.tier_keys(str(session_id)),
                str(tenant_id),
                self._hot_ttl_arg,
                b"0",
            )
        if isinstance(result, list):
            if result[0] == CORRUPT:
                raise StoreError(f"stored session {session_id} has an unreadable header")
            self._refused_promotion(tenant_id, session_id, result[1])
            raise StoreConnectionError(f"redis refused to promote session {session_id}: {result[1]!r}")
        return bool(result)

    async def demote_to_persistent(self, tenant_id: UUID, session_id: UUID) -> bool:
        """Drop the hot copy, keeping the persistent one; False if the session does not exist."""
        async with self._gate("session.demote", tenant_id):
            result = await DEMOTE(self._client, 2, *self.keys.tier_keys(str(session_id)), str(tenant_id))
        if result == CORRUPT:
            raise StoreError(f"stored session {session_id} has an unreadable header")
        return bool(result)

    async def health_check(self) -> bool:
        """True when the server answers PING; False (logged) when it is unreachable."""
        try:
            async with self._gate("session.health_check"):
                return bool(await self._client.ping())
        except StoreError:
            return False

    # --- indexes --------------------------------------------------------------------------

    async def get_by_channel(self, tenant_id: UUID, channel: Channel, user_channel_id: str) -> Session | None:
        check_lookup_text(user_channel_id, "user_channel_id")
        async with self._gate("session.get_by_channel", tenant_id):
            return await IndexReader(self._client, self.keys, tenant_id).latest(
                self.keys.channel(tenant_id, channel, user_channel_id),
                belongs=lambda s: s.channel == channel and s.user_channel_id == user_channel_id,
            )

    async def list_by_agent(
        self, tenant_id: UUID, agent_id: UUID, *, status: SessionStatus | None = None, limit: int = 100
    ) -> list[Session]:
        check_limit(limit)
        async with self._gate("session.list_by_agent", tenant_id):
            return await IndexReader(self._client, self.keys, tenant_id).by_activity(
                self.keys.agent(tenant_id, agent_id),
                belongs=lambda s: s.agent_id == agent_id,
                accept=lambda s: status is None or s.status == status,
                limit=limit,
            )

    async def list_by_customer(
        self, tenant_id: UUID, customer_profile_id: UUID, *, limit: int = 100
    ) -> list[Session]:
        check_limit(limit)
        async with self._gate("session.list_by_customer", tenant_id):
            return await IndexReader(self._client, self.keys, tenant_id).by_activity(
                self.keys.customer(tenant_id, customer_profile_id),
                belongs=lambda s: s.customer_profile_id == customer_profile_id,
                accept=lambda s: True,
                limit=limit,
            )

    async def find_sessions_by_step_hash(
        self,
        tenant_id: UUID,
        scenario_id: UUID,
        scenario_version: int,
        step_content_hash: str,
        scope_filter: ScopeFilter | None = None,
    ) -> list[Session]:
        check_lookup_text(step_content_hash, "step_content_hash")
        now = utc_now()
        async with self._gate("session.find_by_step_hash", tenant_id):
            at_step = await IndexReader(self._client, self.keys, tenant_id).all_members(
                self.keys.step(tenant_id, scenario_id, scenario_version, step_content_hash),
                belongs=lambda s: is_at_step(s, scenario_id, scenario_version, step_content_hash),
            )
        return [s for s in at_step if session_matches_scope_filter(s, scope_filter, now)]

    async def purge_expired(self, tenant_id: UUID) -> int:
        """Remove this tenant's index entries whose session is gone (expired or deleted); return
        how many were removed. Index keys that expired themselves leave the registry. Not bound by
        the operation timeout (a tenant may have many indexes); each round trip still is by the
        socket timeout."""
        async with self._gate("session.purge_expired", tenant_id, bounded=False):
            removed = await purge_stale_index_entries(self._client, self.keys, tenant_id)
        _log.info("purged stale session index entries", tenant_id=str(tenant_id), removed=removed)
        return removed
