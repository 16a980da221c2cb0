"""In-memory ConfigStore, tool definitions: tenant-wide, keyed by name, soft-deleted.

The PostgreSQL store (``postgres_tools``) makes the same choices: an upsert by id; another
tenant's id is a ``ConflictError``, a soft-deleted one a ``NotFoundError``; a live name is unique
per tenant (``ConflictError``); a stored definition keeps its name (``ConflictError`` for a save
that renames it); a conditional save (``expected_revision``) needs the live row of this tenant at
that revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from focal.alignment.models import ToolDefinition
from focal.alignment.stores import config_checks as checks
from focal.alignment.stores import revisions
from focal.alignment.stores.inmemory_plans import InMemoryPlansAndActivations
from focal.errors import ConflictError, NotFoundError
from focal.models import utc_now
from focal.validation import check_no_nul

__all__ = ["InMemoryToolDefinitions", "renamed_definition"]


def renamed_definition(stored_name: str, new_name: str) -> ConflictError:
    return ConflictError(
        f"tool definition {stored_name!r} cannot be renamed to {new_name!r}: the name is its key; "
        "create a new definition instead"
    )


class InMemoryToolDefinitions(InMemoryPlansAndActivations):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._tool_definitions: dict[UUID, ToolDefinition] = {}

    def _live_definition(self, tenant_id: UUID, name: str) -> ToolDefinition | None:
        check_no_nul(name, "name")
        for row in self._tool_definitions.values():
            if row.tenant_id == tenant_id and row.name == name and row.deleted_at is None:
                return row
        return None

    async def get_tool_definition(self, tenant_id: UUID, name: str) -> ToolDefinition | None:
        row = self._live_definition(tenant_id, name)
        return row.model_copy(deep=True) if row is not None else None

    async def get_tool_definitions(
        self, tenant_id: UUID, *, names: Sequence[str] | None = None
    ) -> list[ToolDefinition]:
        wanted = None if names is None else set(names)
        if wanted is not None:
            check_no_nul(list(wanted), "names")
        rows = [
            row
            for row in self._tool_definitions.values()
            if row.tenant_id == tenant_id
            and row.deleted_at is None
            and (wanted is None or row.name in wanted)
        ]
        rows.sort(key=lambda row: (row.name, row.id))
        return [row.model_copy(deep=True) for row in rows]

    async def save_tool_definition(
        self, definition: ToolDefinition, *, expected_revision: int | None = None
    ) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row = checks.checked_tool_definition(definition)
        async with self._lock:
            existing = self._tool_definitions.get(row.id)
            if expected is not None:
                if existing is None or existing.tenant_id != row.tenant_id or existing.deleted_at is not None:
                    raise revisions.missing_row("ToolDefinition", row.id)
                if existing.revision != expected:
                    raise revisions.stale_revision("ToolDefinition", row.id, existing.revision, expected)
            elif existing is not None:
                if existing.tenant_id != row.tenant_id:
                    raise ConflictError(f"ToolDefinition id {row.id} belongs to another tenant")
                if existing.deleted_at is not None:
                    raise NotFoundError(f"ToolDefinition {row.id} was deleted")
            if existing is not None and existing.name != row.name:
                raise renamed_definition(existing.name, row.name)
            holder = self._live_definition(row.tenant_id, row.name)
            if holder is not None and holder.id != row.id:
                raise ConflictError(f"tenant {row.tenant_id} already has a tool named {row.name!r}")
            if existing is not None:
                row.created_at = existing.created_at
            row.revision = existing.revision + 1 if existing is not None else 1
            row.updated_at = utc_now()
            self._tool_definitions[row.id] = row
            return row.id

    async def delete_tool_definition(self, tenant_id: UUID, name: str) -> bool:
        async with self._lock:
            row = self._live_definition(tenant_id, name)
            if row is None:
                return False
            row.deleted_at = row.updated_at = utc_now()
            return True
