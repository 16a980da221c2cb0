"""In-memory AuditStore: the reference implementation the contract suite holds every backend to.

Append-only: a record, once saved, is never replaced. Records are kept as JSON-normalised
snapshots (``focal.validation.snapshot``), so what comes back equals what PostgreSQL's JSONB
would return and callers can never reach the stored objects.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from uuid import UUID

from focal.audit.models import AuditEvent, TurnRecord
from focal.audit.stores.checks import check_event, check_event_filter, check_turn, check_window
from focal.audit.stores.store import AuditStore
from focal.errors import ConflictError
from focal.validation import check_limit, snapshot

__all__ = ["InMemoryAuditStore"]


class InMemoryAuditStore(AuditStore):
    def __init__(self) -> None:
        self._turns: dict[UUID, TurnRecord] = {}
        self._turn_keys: dict[tuple[UUID, UUID, int], UUID] = {}  # (tenant, session, turn_number) -> id
        self._events: dict[UUID, AuditEvent] = {}
        # Check-then-write must be atomic; no await happens inside today, the lock keeps it so.
        self._lock = asyncio.Lock()

    async def save_turn(self, turn: TurnRecord) -> UUID:
        check_turn(turn)
        stored = snapshot(turn)
        key = (stored.tenant_id, stored.session_id, stored.turn_number)
        async with self._lock:
            if stored.id in self._turns:  # any tenant: ids are global, records never overwritten
                raise ConflictError(f"turn record {stored.id} already exists")
            if key in self._turn_keys:
                raise ConflictError(
                    f"session {stored.session_id} already has turn number {stored.turn_number}"
                )
            self._turns[stored.id] = stored
            self._turn_keys[key] = stored.id
        return stored.id

    async def get_turn(self, tenant_id: UUID, turn_id: UUID) -> TurnRecord | None:
        turn = self._turns.get(turn_id)
        if turn is None or turn.tenant_id != tenant_id:
            return None
        return snapshot(turn)

    async def list_turns_by_session(
        self, tenant_id: UUID, session_id: UUID, *, limit: int = 100, offset: int = 0
    ) -> list[TurnRecord]:
        check_limit(limit, offset)
        turns = [t for t in self._turns.values() if t.tenant_id == tenant_id and t.session_id == session_id]
        turns.sort(key=lambda t: (t.turn_number, t.id))
        return [snapshot(t) for t in turns[offset : offset + limit]]

    async def list_turns_by_tenant(
        self,
        tenant_id: UUID,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[TurnRecord]:
        check_limit(limit)
        check_window(since, until)
        turns = [
            t
            for t in self._turns.values()
            if t.tenant_id == tenant_id
            and (since is None or t.created_at >= since)
            and (until is None or t.created_at < until)
        ]
        # created_at desc, then id asc (the PostgreSQL backend's ORDER BY created_at DESC, id).
        turns.sort(key=lambda t: t.id)
        turns.sort(key=lambda t: t.created_at, reverse=True)
        return [snapshot(t) for t in turns[:limit]]

    async def save_event(self, event: AuditEvent) -> UUID:
        check_event(event)
        stored = snapshot(event)
        async with self._lock:
            if stored.id in self._events:
                raise ConflictError(f"audit event {stored.id} already exists")
            self._events[stored.id] = stored
        return stored.id

    async def get_event(self, tenant_id: UUID, event_id: UUID) -> AuditEvent | None:
        event = self._events.get(event_id)
        if event is None or event.tenant_id != tenant_id:
            return None
        return snapshot(event)

    async def list_events(
        self,
        tenant_id: UUID,
        *,
        session_id: UUID | None = None,
        event_type: str | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        check_limit(limit)
        check_event_filter(event_type)
        events = [
            e
            for e in self._events.values()
            if e.tenant_id == tenant_id
            and (session_id is None or e.session_id == session_id)
            and (event_type is None or e.event_type == event_type)
        ]
        events.sort(key=lambda e: (e.created_at, e.id))
        return [snapshot(e) for e in events[:limit]]
