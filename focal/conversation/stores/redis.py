"""The production SessionStore: Redis (or Valkey, standalone or cluster) with two tiers.

Layout and reasons: ``redis_keys.py``; the atomic scripts: ``redis_scripts.py``; error mapping:
``redis_errors.py``. In short:

- ``save`` checks version and tenant and writes the hot and the persistent copy in ONE Lua script
  (write-through). On a cluster a second script then updates the tenant's indexes (all its keys
  sit in the tenant's slot; one call is cheaper for the client than a ten-command pipeline, and
  atomic, so readers never see half of one save's index update). On a standalone server both run
  as one script: one round trip, and session and indexes change together. Nothing is lost when
  the hot key expires: that expiry *is* the demotion.
- ``get`` reads the hot tier and slides its TTL; on a miss it promotes the persistent copy, in the
  same script. Lists and searches read the persistent copy (always current) and do not promote:
  browsing sessions is not conversation activity.
- A session's max age counts from its ``created_at``; the persistent key carries it as its TTL, set
  on creation and kept on later saves. A session created longer ago than the max age cannot be saved.
- Index entries are hints. Readers verify every entry against the session it names and drop entries
  whose session is gone or no longer matches (``purge_expired`` does the same for a whole tenant).
  A reader's clean-up can race a save that moves a session back into an index it just left; the
  entry then returns with that session's next save.
  If a cluster's index update fails after the session script committed, ``save`` raises
  ``StoreConnectionError`` although the session is stored; a re-read shows the new version.
- ``last_activity_at`` comes from this process's clock; the indexes keep the highest score seen per
  session (``ZADD GT``), so a late index update of an older save cannot move a session backwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TypeAlias, cast
from uuid import UUID

import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from focal.alignment.models import ScopeFilter
from focal.conversation.models import Channel, Session, SessionStatus
from focal.conversation.scope_filter import session_matches_scope_filter
from focal.conversation.stores.redis_errors import translate_redis_errors
from focal.conversation.stores.redis_keys import SessionKeys, text
from focal.conversation.stores.redis_purge import purge_stale_index_entries
from focal.conversation.stores.redis_scripts import (
    DELETE_SESSION,
    DEMOTE,
    GET_AND_PROMOTE,
    INDEX_SESSION,
    SAVE_AND_INDEX,
    SAVE_SESSION,
    encode_next_version,
)
from focal.conversation.stores.session_codec import (
    activity_order_key,
    epoch_micros,
    is_at_step,
    parse_session,
)
from focal.conversation.stores.store import SessionStore
from focal.errors import ConfigurationError, ConflictError, InvalidDataError, StoreError
from focal.logging import get_logger
from focal.models import utc_now
from focal.validation import check_limit

_log = get_logger("focal.conversation.stores.redis")

RedisClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.RedisCluster"

_CHUNK = 500  # sessions per pipeline when reading or checking many


class RedisSessionStore(SessionStore):
    """Two-tier session store on redis-py asyncio; see the module docstring for the semantics.

    ``client`` is a ``redis.asyncio.Redis`` (use a ``BlockingConnectionPool``: a plain pool fails
    bursts with "Too many connections") or a ``redis.asyncio.RedisCluster``. The store never closes
    it. Either ``decode_responses`` setting works.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        hot_ttl_seconds: float = 1800,
        max_age_seconds: float = 604800,
        key_prefix: str = "focal",
        max_session_bytes: int = 1_048_576,
    ) -> None:
        if hot_ttl_seconds <= 0 or max_age_seconds <= 0 or max_session_bytes <= 0:
            raise ConfigurationError(
                "hot_ttl_seconds, max_age_seconds and max_session_bytes must be positive, got "
                f"{hot_ttl_seconds}, {max_age_seconds}, {max_session_bytes}"
            )
        self._client = client
        self._hot_ttl_ms = max(1, int(hot_ttl_seconds * 1000))
        self._max_age_ms = max(1, int(max_age_seconds * 1000))
        self._max_session_bytes = max_session_bytes
        # Script arguments that never change, encoded once: redis-py sends bytes as they are.
        self._hot_ttl_arg = str(self._hot_ttl_ms).encode()
        self._max_age_arg = str(self._max_age_ms).encode()
        self.keys = SessionKeys(key_prefix)
        # A cluster cannot run one script over a session's slot and the tenant's slot, so there
        # a save is two scripts; a standalone server does both in one atomic round trip.
        self._is_cluster = isinstance(client, RedisCluster)

    # --- single sessions ------------------------------------------------------------------

    async def get(self, tenant_id: UUID, session_id: UUID) -> Session | None:
        with translate_redis_errors("session.get", tenant_id=tenant_id):
            payload = await GET_AND_PROMOTE(
                self._client,
                2,
                *self.keys.tier_keys(str(session_id)),
                str(tenant_id),
                self._hot_ttl_arg,
                b"1",
            )
        if payload is None:
            return None
        try:
            return parse_session(payload)
        except InvalidDataError as exc:
            raise StoreError(f"stored session {session_id} is unreadable: {exc}") from exc

    async def save(self, session: Session) -> Session:
        now = utc_now()
        payload, stored = encode_next_version(session, now)
        expected = stored.version - 1
        size = len(payload)  # UTF-8 bytes, as stored
        if size > self._max_session_bytes:
            raise InvalidDataError(
                f"session {stored.session_id} is {size} bytes, over the {self._max_session_bytes}-byte limit"
            )
        age_ms = (now - stored.created_at) // timedelta(milliseconds=1)
        persist_ttl_ms = min(self._max_age_ms, self._max_age_ms - age_ms)
        if expected == 0 and persist_ttl_ms <= 0:
            raise InvalidDataError(
                f"session {stored.session_id} was created {age_ms} ms ago, past the max age of "
                f"{self._max_age_ms} ms: it cannot be stored"
            )
        session_id, tenant = str(stored.session_id), str(stored.tenant_id)
        hot_key, persist_key = self.keys.tier_keys(session_id)
        index_keys, ranked = self.keys.index_keys_of(stored, tenant)
        score = epoch_micros(stored.last_activity_at)
        # Arguments of the scripts (see ``redis_scripts``), passed flat: ``expected`` version,
        # tenant, payload, hot TTL, persist TTL (used on creation only); then for the indexes the
        # member, its score, the index TTL and how many of the index keys are sorted sets.
        with translate_redis_errors("session.save", tenant_id=stored.tenant_id):
            if self._is_cluster:
                status, info = await SAVE_SESSION(
                    self._client, 2, hot_key, persist_key,
                    expected, tenant, payload, self._hot_ttl_arg, max(1, persist_ttl_ms),
                )  # fmt: skip
                if status == 1:
                    await INDEX_SESSION(
                        self._client, len(index_keys), *index_keys,
                        session_id, score, self._max_age_arg, ranked,
                    )  # fmt: skip
            else:
                status, info = await SAVE_AND_INDEX(
                    self._client, 2 + len(index_keys), hot_key, persist_key, *index_keys,
                    expected, tenant, payload, self._hot_ttl_arg, max(1, persist_ttl_ms),
                    session_id, score, self._max_age_arg, ranked,
                )  # fmt: skip
        if status == -1:
            raise ConflictError(f"session id {stored.session_id} belongs to another tenant")
        if status == -2:
            raise StoreError(f"stored session {stored.session_id} has an unreadable header")
        if status == 0:
            raise ConflictError(
                f"session {stored.session_id} is at version {info}, the save was based on version {expected}"
            )
        return stored

    async def delete(self, tenant_id: UUID, session_id: UUID) -> bool:
        with translate_redis_errors("session.delete", tenant_id=tenant_id):
            payload = await DELETE_SESSION(
                self._client, 2, *self.keys.tier_keys(str(session_id)), str(tenant_id)
            )
            if payload is None:
                return False
            try:
                session = parse_session(payload)
            except InvalidDataError:  # unreadable copy: its index entries are dropped by readers
                return True
            ranked, step_key = self.keys.indexes_of(session)
            pipe = self._client.pipeline(transaction=False)
            for key in ranked:
                pipe.zrem(key, str(session_id))
            if step_key is not None:
                pipe.srem(step_key, str(session_id))
            await pipe.execute()
        return True

    async def promote_to_hot(self, tenant_id: UUID, session_id: UUID) -> bool:
        """Put the session in the hot tier (or slide its hot TTL); False if it does not exist."""
        with translate_redis_errors("session.promote", tenant_id=tenant_id):
            result = await GET_AND_PROMOTE(
                self._client,
                2,
                *self.keys.tier_keys(str(session_id)),
                str(tenant_id),
                self._hot_ttl_arg,
                b"0",
            )
        return result is not None

    async def demote_to_persistent(self, tenant_id: UUID, session_id: UUID) -> bool:
        """Drop the hot copy, keeping the persistent one; False if the session does not exist."""
        with translate_redis_errors("session.demote", tenant_id=tenant_id):
            result = await DEMOTE(self._client, 2, *self.keys.tier_keys(str(session_id)), str(tenant_id))
        return bool(result)

    async def health_check(self) -> bool:
        """True when the server answers PING; False (logged) when it is unreachable."""
        try:
            with translate_redis_errors("session.health_check"):
                return bool(await self._client.ping())
        except StoreError:
            return False

    # --- indexes --------------------------------------------------------------------------

    async def _load(self, session_ids: list[str]) -> list[Session | None]:
        """The persistent copies of these sessions, in order (None where gone or unreadable).

        Read in chunks so a large index never becomes one huge pipeline reply in memory at once."""
        sessions: list[Session | None] = []
        for start in range(0, len(session_ids), _CHUNK):
            pipe = self._client.pipeline(transaction=False)
            for session_id in session_ids[start : start + _CHUNK]:
                pipe.get(self.keys.persist(session_id))
            for payload in await pipe.execute():
                try:
                    sessions.append(parse_session(payload) if payload is not None else None)
                except InvalidDataError:
                    _log.error("unreadable stored session dropped from an index read", error="invalid JSON")
                    sessions.append(None)
        return sessions

    async def _ranked(
        self,
        tenant_id: UUID,
        key: str,
        *,
        belongs: Callable[[Session], bool],
        accept: Callable[[Session], bool],
        limit: int,
        operation: str,
    ) -> list[Session]:
        """Read a sorted-set index newest first: up to ``limit`` sessions that ``belongs`` to it
        and are accepted, ordered by last activity desc then session id. Entries of missing,
        foreign or no-longer-matching sessions are removed from the index."""
        found: dict[str, Session] = {}
        stale: list[str] = []
        seen: set[str] = set()

        async def consider(entries: Iterable[tuple[bytes | str, float]]) -> None:
            ids = [m for m in (text(member) for member, _ in entries) if m not in seen]
            seen.update(ids)
            for session_id, session in zip(ids, await self._load(ids), strict=True):
                if session is None or session.tenant_id != tenant_id or not belongs(session):
                    stale.append(session_id)
                elif accept(session):
                    found[session_id] = session

        # Read pages newest first, one entry more than the page (a peek at the next score); stop
        # once enough sessions are found. Entries tied with the last one read may still sort
        # before it by session id: when the peek shows a tie, read every entry of that score.
        start, page = 0, limit
        with translate_redis_errors(operation, tenant_id=tenant_id):
            while True:
                # withscores=True: (member, score) pairs; redis-py's return type covers every variant.
                entries = cast(
                    list[tuple[bytes | str, float]],
                    await self._client.zrevrange(key, start, start + page, withscores=True),
                )
                batch, peek = entries[:page], entries[page:]
                await consider(batch)
                if not peek:
                    break
                if len(found) >= limit:
                    boundary = batch[-1][1]
                    if peek[0][1] == boundary:
                        tied = await self._client.zrangebyscore(key, boundary, boundary, withscores=True)
                        await consider(cast(list[tuple[bytes | str, float]], tied))
                    break
                start += page
                page = min(page * 2, _CHUNK)
            if stale:
                await self._client.zrem(key, *stale)
        return sorted(found.values(), key=activity_order_key)[:limit]

    async def get_by_channel(self, tenant_id: UUID, channel: Channel, user_channel_id: str) -> Session | None:
        found = await self._ranked(
            tenant_id,
            self.keys.channel(tenant_id, channel, user_channel_id),
            belongs=lambda s: s.channel == channel and s.user_channel_id == user_channel_id,
            accept=lambda s: True,
            limit=1,
            operation="session.get_by_channel",
        )
        return found[0] if found else None

    async def list_by_agent(
        self, tenant_id: UUID, agent_id: UUID, *, status: SessionStatus | None = None, limit: int = 100
    ) -> list[Session]:
        check_limit(limit)
        return await self._ranked(
            tenant_id,
            self.keys.agent(tenant_id, agent_id),
            belongs=lambda s: s.agent_id == agent_id,
            accept=lambda s: status is None or s.status == status,
            limit=limit,
            operation="session.list_by_agent",
        )

    async def list_by_customer(
        self, tenant_id: UUID, customer_profile_id: UUID, *, limit: int = 100
    ) -> list[Session]:
        check_limit(limit)
        return await self._ranked(
            tenant_id,
            self.keys.customer(tenant_id, customer_profile_id),
            belongs=lambda s: s.customer_profile_id == customer_profile_id,
            accept=lambda s: True,
            limit=limit,
            operation="session.list_by_customer",
        )

    async def find_sessions_by_step_hash(
        self,
        tenant_id: UUID,
        scenario_id: UUID,
        scenario_version: int,
        step_content_hash: str,
        scope_filter: ScopeFilter | None = None,
    ) -> list[Session]:
        key = self.keys.step(tenant_id, scenario_id, scenario_version, step_content_hash)
        now = utc_now()
        matches: list[Session] = []
        with translate_redis_errors("session.find_by_step_hash", tenant_id=tenant_id):
            ids = sorted(text(m) for m in await self._client.smembers(key))
            stale: list[str] = []
            for session_id, session in zip(ids, await self._load(ids), strict=True):
                if (
                    session is None
                    or session.tenant_id != tenant_id
                    or not is_at_step(session, scenario_id, scenario_version, step_content_hash)
                ):
                    stale.append(session_id)
                elif session_matches_scope_filter(session, scope_filter, now):
                    matches.append(session)
            if stale:
                await self._client.srem(key, *stale)
        return sorted(matches, key=lambda s: s.session_id)

    async def purge_expired(self, tenant_id: UUID) -> int:
        """Remove this tenant's index entries whose session is gone (expired or deleted); return
        how many were removed. Index keys that expired themselves leave the registry."""
        with translate_redis_errors("session.purge_expired", tenant_id=tenant_id):
            removed = await purge_stale_index_entries(self._client, self.keys, tenant_id)
        _log.info("purged stale session index entries", tenant_id=str(tenant_id), removed=removed)
        return removed
