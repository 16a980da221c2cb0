"""PostgreSQL ConfigStore, tool definitions (schema: revision 0007). Same choices as the
in-memory store (``inmemory_tools``).

The secret lives in its own table, ``tool_definition_secrets`` (one row per definition that has
one, written in the definition's transaction). The reason is the log: when PostgreSQL refuses a
row (a CHECK or NOT NULL violation) its error detail quotes the whole row, and
``translate_pg_errors`` logs that detail. The secrets table has no constraint a written value
could break, so no error of PostgreSQL's ever carries a secret.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import SecretStr

from focal.alignment.models import ToolDefinition
from focal.alignment.stores import config_checks as checks
from focal.alignment.stores import revisions
from focal.alignment.stores.inmemory_tools import renamed_definition
from focal.alignment.stores.postgres_base import Connection, PostgresConfigBase
from focal.db.translate import translate_pg_errors
from focal.errors import ConflictError, NotFoundError
from focal.models import utc_now
from focal.validation import check_no_nul, json_text

__all__ = ["PostgresToolDefinitions"]

_COLUMNS = (
    "id, tenant_id, name, description, parameters, kind, http, revision, created_at, updated_at, deleted_at"
)
_SELECT = (
    "SELECT d.id, d.tenant_id, d.name, d.description, d.parameters::text AS parameters, d.kind, "
    "d.http::text AS http, d.revision, d.created_at, d.updated_at, d.deleted_at, s.secret "
    "FROM tool_definitions AS d LEFT JOIN tool_definition_secrets AS s ON s.definition_id = d.id "
    "WHERE d.tenant_id = $1 AND d.deleted_at IS NULL"
)
_UPSERT = (
    f"INSERT INTO tool_definitions AS t ({_COLUMNS}) "
    "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::jsonb, 1, $8, $8, NULL) "
    "ON CONFLICT (id) DO UPDATE SET description = EXCLUDED.description, parameters = EXCLUDED.parameters, "
    "kind = EXCLUDED.kind, http = EXCLUDED.http, updated_at = EXCLUDED.updated_at, "
    "revision = t.revision + 1 "
    "WHERE t.tenant_id = EXCLUDED.tenant_id AND t.deleted_at IS NULL AND t.name = EXCLUDED.name "
    "RETURNING t.id"
)
_UPDATE = (
    "UPDATE tool_definitions AS t SET description = $4, parameters = $5::jsonb, kind = $6, "
    "http = $7::jsonb, updated_at = $8, revision = t.revision + 1 "
    "WHERE t.id = $1 AND t.tenant_id = $2 AND t.name = $3 AND t.revision = $9 AND t.deleted_at IS NULL "
    "RETURNING t.id"
)
_SET_SECRET = (
    "INSERT INTO tool_definition_secrets (definition_id, tenant_id, secret) VALUES ($1, $2, $3) "
    "ON CONFLICT (definition_id) DO UPDATE SET secret = EXCLUDED.secret"
)
_DROP_SECRET = "DELETE FROM tool_definition_secrets WHERE definition_id = $1"


def _from_record(record: asyncpg.Record) -> ToolDefinition:
    secret = record["secret"]
    return ToolDefinition.model_validate(
        {
            "id": record["id"],
            "tenant_id": record["tenant_id"],
            "name": record["name"],
            "description": record["description"],
            "parameters": json.loads(record["parameters"]),
            "kind": record["kind"],
            "http": json.loads(record["http"]),
            "secret": SecretStr(secret) if secret is not None else None,
            "revision": record["revision"],
            "created_at": record["created_at"],
            "updated_at": record["updated_at"],
            "deleted_at": record["deleted_at"],
        }
    )


class PostgresToolDefinitions(PostgresConfigBase):
    async def get_tool_definition(self, tenant_id: UUID, name: str) -> ToolDefinition | None:
        check_no_nul(name, "name")
        with translate_pg_errors("get_tool_definition", tenant_id=tenant_id):
            record = await self._pool.fetchrow(f"{_SELECT} AND d.name = $2", tenant_id, name)
        return None if record is None else _from_record(record)

    async def get_tool_definitions(
        self, tenant_id: UUID, *, names: Sequence[str] | None = None
    ) -> list[ToolDefinition]:
        wanted = None if names is None else list(names)
        check_no_nul(wanted, "names")
        sql = f"{_SELECT} AND ($2::text[] IS NULL OR d.name = ANY($2::text[])) ORDER BY d.name, d.id"
        with translate_pg_errors("get_tool_definitions", tenant_id=tenant_id):
            records = await self._pool.fetch(sql, tenant_id, wanted)
        return [_from_record(record) for record in records]

    async def save_tool_definition(
        self, definition: ToolDefinition, *, expected_revision: int | None = None
    ) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row = checks.checked_tool_definition(definition)
        now = utc_now()
        values: tuple[Any, ...] = (
            row.id,
            row.tenant_id,
            row.name,
            row.description,
            json_text(row.parameters),
            row.kind,
            json_text(row.http.model_dump(mode="json")),
            now,
        )
        taken = {
            "tool_definitions_live_name_key": f"tenant {row.tenant_id} already has a tool named {row.name!r}"
        }
        with translate_pg_errors("save_tool_definition", tenant_id=row.tenant_id, messages=taken):
            async with self._pool.acquire() as connection, connection.transaction():
                if expected is None:
                    row_id = await connection.fetchval(_UPSERT, *values)
                else:
                    row_id = await connection.fetchval(_UPDATE, *values, expected)
                if row_id is None:
                    await self._explain_refusal(connection, row, expected)
                if row.secret is None:
                    await connection.execute(_DROP_SECRET, row.id)
                else:
                    await connection.execute(
                        _SET_SECRET, row.id, row.tenant_id, row.secret.get_secret_value()
                    )
        return row.id

    @staticmethod
    async def _explain_refusal(connection: Connection, row: ToolDefinition, expected: int | None) -> None:
        holder = await connection.fetchrow(
            "SELECT tenant_id, name, deleted_at, revision FROM tool_definitions WHERE id = $1", row.id
        )
        live_here = (
            holder is not None and holder["tenant_id"] == row.tenant_id and holder["deleted_at"] is None
        )
        if expected is not None and not live_here:
            raise revisions.missing_row("ToolDefinition", row.id)
        if holder is None or holder["tenant_id"] != row.tenant_id:
            raise ConflictError(f"ToolDefinition id {row.id} belongs to another tenant")
        if holder["deleted_at"] is not None:
            raise NotFoundError(f"ToolDefinition {row.id} was deleted")
        if holder["name"] != row.name:
            raise renamed_definition(holder["name"], row.name)
        if expected is not None and holder["revision"] != expected:
            raise revisions.stale_revision("ToolDefinition", row.id, holder["revision"], expected)
        raise ConflictError(f"ToolDefinition {row.id} changed concurrently; read it again")

    async def delete_tool_definition(self, tenant_id: UUID, name: str) -> bool:
        check_no_nul(name, "name")
        now = utc_now()
        with translate_pg_errors("delete_tool_definition", tenant_id=tenant_id):
            status = await self._pool.execute(
                "UPDATE tool_definitions SET deleted_at = $3, updated_at = $3 "
                "WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL",
                tenant_id,
                name,
                now,
            )
        return bool(status == "UPDATE 1")
