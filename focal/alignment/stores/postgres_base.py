"""Mechanics shared by every part of the PostgreSQL ConfigStore: reads, upserts, soft deletes.

Every database call runs inside ``translate_pg_errors``, so asyncpg errors leave as Focal errors
(logged once with tenant and operation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from focal.alignment.stores import revisions
from focal.alignment.stores.postgres_rows import Table
from focal.db.translate import translate_pg_errors
from focal.errors import ConflictError, InvalidDataError, NotFoundError
from focal.models import utc_now

__all__ = ["LIVE", "Connection", "PostgresConfigBase"]

LIVE = "deleted_at IS NULL"

Connection = asyncpg.Connection | PoolConnectionProxy


class PostgresConfigBase:
    """The pool, the configured dimension and the helpers the store's methods are built from."""

    def __init__(self, pool: asyncpg.Pool, *, embedding_dimensions: int = 1536) -> None:
        if embedding_dimensions < 1:
            raise InvalidDataError(f"embedding_dimensions must be >= 1, got {embedding_dimensions}")
        self._pool = pool
        self.embedding_dimensions = embedding_dimensions

    async def _get_live(self, table: Table[Any], tenant_id: UUID, row_id: UUID, operation: str) -> Any:
        sql = f"SELECT {table.select_list} FROM {table.name} WHERE tenant_id = $1 AND id = $2 AND {LIVE}"
        with translate_pg_errors(operation, tenant_id=tenant_id):
            record = await self._pool.fetchrow(sql, tenant_id, row_id)
        return None if record is None else table.from_record(record)

    async def _fetch(
        self, table: Table[Any], sql: str, *args: Any, operation: str, tenant_id: UUID
    ) -> list[Any]:
        with translate_pg_errors(operation, tenant_id=tenant_id):
            records = await self._pool.fetch(sql, *args)
        return table.from_records(records)

    async def _fetch_one(
        self, table: Table[Any], sql: str, *args: Any, operation: str, tenant_id: UUID
    ) -> Any:
        found = await self._fetch(table, sql, *args, operation=operation, tenant_id=tenant_id)
        return found[0] if found else None

    async def _upsert(
        self,
        connection: Connection,
        table: Table[Any],
        model: Any,
        *,
        expected_revision: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> UUID:
        """Write ``model`` with ``updated_at = now``: the table's upsert, or with
        ``expected_revision`` its conditional update. Explain a refused write.

        No row back means the ``WHERE`` refused it. Upsert: the row is another tenant's
        (ConflictError), soft-deleted (NotFoundError; save never resurrects) or a scenario of a
        higher version (ConflictError). Conditional update: not live in this tenant
        (NotFoundError), at another revision (StaleRevisionError) or of a higher version.
        """
        model.updated_at = utc_now()
        if expected_revision is None:
            model.revision = 1  # what an insert writes; an update increments the stored revision
            sql, args = table.upsert_sql, table.values(model, extra)
        else:
            sql, args = table.update_sql, table.update_values(model, expected_revision, extra)
        row_id: UUID | None = await connection.fetchval(sql, *args)
        if row_id is not None:
            return row_id
        version = ", version" if table.keep_version else ""
        holder = await connection.fetchrow(
            f"SELECT tenant_id, deleted_at, revision{version} FROM {table.name} WHERE id = $1", model.id
        )
        kind = table.model.__name__
        live_here = (
            holder is not None and holder["tenant_id"] == model.tenant_id and holder["deleted_at"] is None
        )
        if expected_revision is not None:
            if not live_here:
                raise revisions.missing_row(kind, model.id)
            assert holder is not None
            if holder["revision"] != expected_revision:
                raise revisions.stale_revision(kind, model.id, holder["revision"], expected_revision)
        elif holder is None or holder["tenant_id"] != model.tenant_id:
            raise ConflictError(f"{kind} id {model.id} belongs to another tenant")
        elif holder["deleted_at"] is not None:
            raise NotFoundError(f"{kind} {model.id} was deleted")
        assert holder is not None
        if table.keep_version and holder["version"] > model.version:
            raise revisions.lower_version(model.id, holder["version"], model.version)
        raise ConflictError(f"{kind} {model.id} changed concurrently; read it again")

    @staticmethod
    async def _lock_live_agent(connection: Connection, tenant_id: UUID, agent_id: UUID) -> None:
        """Require a live agent and hold it (FOR SHARE) until the child's transaction ends.

        ``delete_agent`` updates the agent row, so it waits for this transaction and then
        cascades over the child written here; a save that comes after a delete sees the agent
        deleted and fails. No child can outlive its agent.
        """
        found = await connection.fetchval(
            f"SELECT true FROM agents WHERE tenant_id = $1 AND id = $2 AND {LIVE} FOR SHARE",
            tenant_id,
            agent_id,
        )
        if not found:
            raise NotFoundError(f"agent {agent_id} does not exist in tenant {tenant_id}")

    async def _save_child(
        self,
        table: Table[Any],
        model: Any,
        operation: str,
        *,
        messages: dict[str, str] | None = None,
        expected_revision: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> UUID:
        with translate_pg_errors(operation, tenant_id=model.tenant_id, messages=messages):
            async with self._pool.acquire() as connection, connection.transaction():
                await self._lock_live_agent(connection, model.tenant_id, model.agent_id)
                return await self._upsert(
                    connection, table, model, expected_revision=expected_revision, extra=extra
                )

    async def _soft_delete(self, table: Table[Any], tenant_id: UUID, row_id: UUID, operation: str) -> bool:
        sql = (
            f"UPDATE {table.name} SET deleted_at = $3, updated_at = $3 "
            f"WHERE tenant_id = $1 AND id = $2 AND {LIVE}"
        )
        with translate_pg_errors(operation, tenant_id=tenant_id):
            status = await self._pool.execute(sql, tenant_id, row_id, utc_now())
        return bool(status == "UPDATE 1")
