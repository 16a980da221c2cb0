"""The AuditStore interface: append-only turn records and events.

Rules every backend follows (proven by ``tests/contract/test_audit_store.py``):

- records are never overwritten: saving an existing id, or a second turn with the same
  (tenant_id, session_id, turn_number), is a ``ConflictError``; there is no update or delete;
- every call filters on ``tenant_id``; ``limit`` is 1..1000 and ``offset`` >= 0
  (``InvalidDataError``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from uuid import UUID

from focal.audit.models import AuditEvent, TurnRecord


class AuditStore(ABC):
    @abstractmethod
    async def save_turn(self, turn: TurnRecord) -> UUID: ...

    @abstractmethod
    async def get_turn(self, tenant_id: UUID, turn_id: UUID) -> TurnRecord | None: ...

    @abstractmethod
    async def list_turns_by_session(
        self, tenant_id: UUID, session_id: UUID, *, limit: int = 100, offset: int = 0
    ) -> list[TurnRecord]:
        """Turns by turn_number asc."""

    @abstractmethod
    async def list_turns_by_tenant(
        self,
        tenant_id: UUID,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[TurnRecord]:
        """Turns with ``since <= created_at < until``, by created_at desc, then id."""

    @abstractmethod
    async def save_event(self, event: AuditEvent) -> UUID: ...

    @abstractmethod
    async def get_event(self, tenant_id: UUID, event_id: UUID) -> AuditEvent | None: ...

    @abstractmethod
    async def list_events(
        self,
        tenant_id: UUID,
        *,
        session_id: UUID | None = None,
        event_type: str | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Events by created_at asc, then id."""
