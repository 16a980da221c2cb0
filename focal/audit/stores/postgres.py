"""PostgreSQL AuditStore (asyncpg): append-only tables ``turn_records`` and ``audit_events``.

Records are inserted with a plain ``INSERT`` (never an upsert): an existing id, in any tenant, or
a second turn with the same (tenant_id, session_id, turn_number) is a unique violation, which
``translate_pg_errors`` turns into ``ConflictError``. Revision 0003 adds a trigger that refuses
UPDATE, DELETE and TRUNCATE on both tables, so not even raw SQL can rewrite the audit trail.
Dicts and lists live in JSONB columns named after the model fields.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from focal.audit.models import AuditEvent, TurnRecord
from focal.audit.stores.checks import check_event, check_event_filter, check_turn, check_window
from focal.audit.stores.store import AuditStore
from focal.db.translate import translate_pg_errors
from focal.validation import check_limit, json_text

__all__ = ["PostgresAuditStore"]

_TURN_JSON_COLUMNS = ("context_extracted", "rules_matched", "scenario_state", "tools_executed", "token_usage")
# Revision 0008: the hard constraints checked on the turn's answer and the violations found.
_TURN_CONSTRAINT_COLUMNS = ("constraints_checked", "constraints_failed")
_TURN_COLUMNS = (
    "id, tenant_id, agent_id, session_id, turn_number, user_message, assistant_response, "
    "context_extracted, rules_matched, scenario_state, tools_executed, token_usage, latency_ms, created_at, "
    "constraints_checked, constraints_failed"
)
_EVENT_COLUMNS = "id, tenant_id, session_id, turn_id, event_type, event_data, created_at"


def _turn_from_row(row: asyncpg.Record) -> TurnRecord:
    data: dict[str, Any] = dict(row)
    for column in (*_TURN_JSON_COLUMNS, *_TURN_CONSTRAINT_COLUMNS):
        data[column] = json.loads(data[column])
    return TurnRecord.model_validate(data)


def _event_from_row(row: asyncpg.Record) -> AuditEvent:
    data: dict[str, Any] = dict(row)
    data["event_data"] = json.loads(data["event_data"])
    return AuditEvent.model_validate(data)


class PostgresAuditStore(AuditStore):
    """Receives a pool made by ``focal.db.pool.create_pool``; never closes it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def save_turn(self, turn: TurnRecord) -> UUID:
        check_turn(turn)
        data = turn.model_dump(mode="json", warnings=False)
        messages = {  # the in-memory store's words for the same conflicts
            "turn_records_pkey": f"turn record {turn.id} already exists",
            "turn_records_session_turn_key": (
                f"session {turn.session_id} already has turn number {turn.turn_number}"
            ),
        }
        with translate_pg_errors("save_turn", tenant_id=turn.tenant_id, messages=messages):
            await self._pool.execute(
                f"INSERT INTO turn_records ({_TURN_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10::jsonb, $11::jsonb, "
                "$12::jsonb, $13, $14, $15::jsonb, $16::jsonb)",
                turn.id,
                turn.tenant_id,
                turn.agent_id,
                turn.session_id,
                turn.turn_number,
                turn.user_message,
                turn.assistant_response,
                *(json_text(data[column], f"TurnRecord.{column}") for column in _TURN_JSON_COLUMNS),
                turn.latency_ms,
                turn.created_at,
                *(json_text(data[column], f"TurnRecord.{column}") for column in _TURN_CONSTRAINT_COLUMNS),
            )
        return turn.id

    async def get_turn(self, tenant_id: UUID, turn_id: UUID) -> TurnRecord | None:
        with translate_pg_errors("get_turn", tenant_id=tenant_id):
            row = await self._pool.fetchrow(
                f"SELECT {_TURN_COLUMNS} FROM turn_records WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                turn_id,
            )
        return None if row is None else _turn_from_row(row)

    async def list_turns_by_session(
        self, tenant_id: UUID, session_id: UUID, *, limit: int = 100, offset: int = 0
    ) -> list[TurnRecord]:
        check_limit(limit, offset)
        with translate_pg_errors("list_turns_by_session", tenant_id=tenant_id):
            rows = await self._pool.fetch(
                f"SELECT {_TURN_COLUMNS} FROM turn_records WHERE tenant_id = $1 AND session_id = $2 "
                "ORDER BY turn_number, id LIMIT $3 OFFSET $4",
                tenant_id,
                session_id,
                limit,
                offset,
            )
        return [_turn_from_row(row) for row in rows]

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
        where, arguments = _where(tenant_id, ("created_at >=", since), ("created_at <", until))
        arguments.append(limit)
        with translate_pg_errors("list_turns_by_tenant", tenant_id=tenant_id):
            rows = await self._pool.fetch(
                f"SELECT {_TURN_COLUMNS} FROM turn_records WHERE {where} "
                f"ORDER BY created_at DESC, id LIMIT ${len(arguments)}",
                *arguments,
            )
        return [_turn_from_row(row) for row in rows]

    async def save_event(self, event: AuditEvent) -> UUID:
        check_event(event)
        with translate_pg_errors(
            "save_event", tenant_id=event.tenant_id, duplicate=f"audit event {event.id} already exists"
        ):
            await self._pool.execute(
                f"INSERT INTO audit_events ({_EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
                event.id,
                event.tenant_id,
                event.session_id,
                event.turn_id,
                event.event_type,
                json_text(
                    event.model_dump(mode="json", warnings=False)["event_data"], "AuditEvent.event_data"
                ),
                event.created_at,
            )
        return event.id

    async def get_event(self, tenant_id: UUID, event_id: UUID) -> AuditEvent | None:
        with translate_pg_errors("get_event", tenant_id=tenant_id):
            row = await self._pool.fetchrow(
                f"SELECT {_EVENT_COLUMNS} FROM audit_events WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                event_id,
            )
        return None if row is None else _event_from_row(row)

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
        where, arguments = _where(tenant_id, ("session_id =", session_id), ("event_type =", event_type))
        arguments.append(limit)
        with translate_pg_errors("list_events", tenant_id=tenant_id):
            rows = await self._pool.fetch(
                f"SELECT {_EVENT_COLUMNS} FROM audit_events WHERE {where} "
                f"ORDER BY created_at, id LIMIT ${len(arguments)}",
                *arguments,
            )
        return [_event_from_row(row) for row in rows]


def _where(tenant_id: UUID, *filters: tuple[str, Any]) -> tuple[str, list[Any]]:
    """``tenant_id = $1`` AND one ``<column> <operator> $n`` per filter whose value is given, with
    the arguments in parameter order. Filters are added only when given, so each shape of query
    gets a plan that uses the index."""
    conditions = ["tenant_id = $1"]
    arguments: list[Any] = [tenant_id]
    for condition, value in filters:
        if value is not None:
            arguments.append(value)
            conditions.append(f"{condition} ${len(arguments)}")
    return " AND ".join(conditions), arguments
