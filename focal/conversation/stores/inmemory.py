"""The in-memory reference SessionStore: the semantics every production backend must match.

Sessions are kept by ``session_id`` across all tenants, so a second tenant reusing an id is caught
as a ``ConflictError`` instead of silently shadowing the first tenant's session. Every session goes
in and out through a JSON round trip (``model_dump_json`` / ``model_validate_json``): that deep-copies
it, re-validates objects built with ``model_construct`` or mutated behind pydantic's back, and
normalises ``variables`` exactly like the Redis store does (a ``datetime`` in ``variables`` comes back
as its ISO string in both), so the two backends return equal objects for equal input.

``get_by_channel`` returns the latest *save* (a counter of this store, like the Redis store's
server-side tick), not the latest ``last_activity_at``: that one comes from the saving process's
clock, and a process whose clock ran ahead must not keep an older session "latest".
"""

from __future__ import annotations

import asyncio
from itertools import count
from uuid import UUID

from focal.alignment.models import ScopeFilter
from focal.conversation.models import Channel, Session, SessionStatus
from focal.conversation.scope_filter import session_matches_scope_filter
from focal.conversation.stores.session_codec import (
    activity_order_key,
    check_lookup_text,
    checked_for_save,
    is_at_step,
    next_last_activity,
    normalized_copy,
)
from focal.conversation.stores.store import SessionStore
from focal.errors import ConflictError
from focal.models import utc_now
from focal.validation import check_limit


class InMemorySessionStore(SessionStore):
    """Sessions in a dict, guarded by an ``asyncio.Lock`` for the version check-then-write."""

    def __init__(self) -> None:
        self._sessions: dict[UUID, Session] = {}
        self._save_order: dict[UUID, int] = {}  # session id -> sequence number of its latest save
        self._saves = count(1)
        self._lock = asyncio.Lock()

    def _visible(self, tenant_id: UUID, session_id: UUID) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None or session.tenant_id != tenant_id:
            return None
        return session

    async def get(self, tenant_id: UUID, session_id: UUID) -> Session | None:
        session = self._visible(tenant_id, session_id)
        return normalized_copy(session) if session is not None else None

    async def save(self, session: Session) -> Session:
        candidate = checked_for_save(session)  # validates before anything is compared or written
        async with self._lock:
            existing = self._sessions.get(candidate.session_id)
            if existing is not None and existing.tenant_id != candidate.tenant_id:
                raise ConflictError(f"session id {candidate.session_id} belongs to another tenant")
            stored_version = existing.version if existing is not None else 0
            if stored_version != candidate.version:
                raise ConflictError(
                    f"session {candidate.session_id} is at version {stored_version}, "
                    f"the save was based on version {candidate.version}"
                )
            candidate.last_activity_at = next_last_activity(candidate, utc_now())
            candidate.version = stored_version + 1
            self._sessions[candidate.session_id] = candidate
            self._save_order[candidate.session_id] = next(self._saves)
        return normalized_copy(candidate)

    async def delete(self, tenant_id: UUID, session_id: UUID) -> bool:
        async with self._lock:
            if self._visible(tenant_id, session_id) is None:
                return False
            del self._sessions[session_id]
            del self._save_order[session_id]
            return True

    def _tenant_sessions(self, tenant_id: UUID) -> list[Session]:
        return [s for s in self._sessions.values() if s.tenant_id == tenant_id]

    async def get_by_channel(self, tenant_id: UUID, channel: Channel, user_channel_id: str) -> Session | None:
        check_lookup_text(user_channel_id, "user_channel_id")
        matches = [
            s
            for s in self._tenant_sessions(tenant_id)
            if s.channel == channel and s.user_channel_id == user_channel_id
        ]
        if not matches:
            return None
        return normalized_copy(max(matches, key=lambda s: self._save_order[s.session_id]))

    async def list_by_agent(
        self, tenant_id: UUID, agent_id: UUID, *, status: SessionStatus | None = None, limit: int = 100
    ) -> list[Session]:
        check_limit(limit)
        matches = [
            s
            for s in self._tenant_sessions(tenant_id)
            if s.agent_id == agent_id and (status is None or s.status == status)
        ]
        matches.sort(key=activity_order_key)
        return [normalized_copy(s) for s in matches[:limit]]

    async def list_by_customer(
        self, tenant_id: UUID, customer_profile_id: UUID, *, limit: int = 100
    ) -> list[Session]:
        check_limit(limit)
        matches = [
            s for s in self._tenant_sessions(tenant_id) if s.customer_profile_id == customer_profile_id
        ]
        matches.sort(key=activity_order_key)
        return [normalized_copy(s) for s in matches[:limit]]

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
        matches = [
            s
            for s in self._tenant_sessions(tenant_id)
            if is_at_step(s, scenario_id, scenario_version, step_content_hash)
            and session_matches_scope_filter(s, scope_filter, now)
        ]
        matches.sort(key=lambda s: s.session_id)
        return [normalized_copy(s) for s in matches]
