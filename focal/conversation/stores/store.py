"""The SessionStore interface: live conversations with optimistic concurrency.

Rules every backend follows (proven by ``tests/contract/test_session_store.py``):

- every call filters on ``tenant_id``; a session of another tenant reads as ``None`` and deletes
  as ``False``; saving over another tenant's session id is a ``ConflictError``;
- ``save`` succeeds only if the stored version equals ``session.version`` (0 for a new session);
  otherwise ``ConflictError`` and nothing is written. It returns the stored copy with
  ``version + 1`` and ``last_activity_at`` set to now (or one microsecond after the replaced
  version's, if that is later: last activity never goes back from one version to the next);
- returned objects are copies; ``limit`` is 1..1000 (``InvalidDataError``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from uuid import UUID

from focal.alignment.models import ScopeFilter
from focal.conversation.models import Channel, Session, SessionStatus


class SessionStore(ABC):
    @abstractmethod
    async def get(self, tenant_id: UUID, session_id: UUID) -> Session | None: ...

    @abstractmethod
    async def save(self, session: Session) -> Session: ...

    @abstractmethod
    async def delete(self, tenant_id: UUID, session_id: UUID) -> bool: ...

    @abstractmethod
    async def get_by_channel(self, tenant_id: UUID, channel: Channel, user_channel_id: str) -> Session | None:
        """The most recently saved session for this channel identity: the order of the saves
        as the backend saw them, not ``last_activity_at`` (which comes from the saving process's
        clock, and a process whose clock runs ahead must not keep an older session "latest")."""

    @abstractmethod
    async def list_by_agent(
        self, tenant_id: UUID, agent_id: UUID, *, status: SessionStatus | None = None, limit: int = 100
    ) -> list[Session]:
        """Sessions by last_activity_at desc, then session_id."""

    @abstractmethod
    async def list_by_customer(
        self, tenant_id: UUID, customer_profile_id: UUID, *, limit: int = 100
    ) -> list[Session]:
        """Sessions by last_activity_at desc, then session_id."""

    @abstractmethod
    async def find_sessions_by_step_hash(
        self,
        tenant_id: UUID,
        scenario_id: UUID,
        scenario_version: int,
        step_content_hash: str,
        scope_filter: ScopeFilter | None = None,
    ) -> list[Session]:
        """Sessions currently at the step with this content hash in this scenario version
        (the step the session is in, i.e. ``current_step_id`` and its latest visit's hash),
        narrowed by ``scope_filter``. Ordered by session_id."""
