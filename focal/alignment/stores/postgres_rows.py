"""Row <-> model mapping and SQL text for the PostgreSQL ConfigStore.

Each model field has its own column of the same name (schema: revision 0002); lists and dicts
that are never queried are JSONB columns named after their field. JSON is passed as text (the
pool registers no JSON codec) and SQL ``NULL`` stands for a ``None`` JSON field. Vectors go
through the pool's pgvector codec as ``list[float]``.

SQL is built once, at import, from the column lists, so every statement text is constant and
asyncpg's prepared-statement cache hits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
from pydantic import BaseModel

from focal.alignment.models import Agent, MigrationPlan, Rule, Scenario, Template, ToolActivation, Variable
from focal.validation import json_text

__all__ = [
    "AGENTS",
    "MIGRATION_PLANS",
    "RULES",
    "SCENARIOS",
    "TEMPLATES",
    "TOOL_ACTIVATIONS",
    "VARIABLES",
    "Table",
]

M = TypeVar("M", bound=BaseModel)

# Columns an upsert never changes: identity, ownership by tenant, and the first save's time.
_KEPT_ON_UPDATE = frozenset({"id", "tenant_id", "created_at"})


@dataclass(frozen=True)
class Table(Generic[M]):
    """One table: its model, columns (= model fields) and the statements built from them."""

    name: str
    model: type[M]
    json_columns: tuple[str, ...] = ()
    soft_delete: bool = True
    columns: tuple[str, ...] = field(init=False)
    select_list: str = field(init=False)
    upsert_sql: str = field(init=False)

    def __post_init__(self) -> None:
        columns = tuple(self.model.model_fields)
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "select_list", ", ".join(columns))
        object.__setattr__(self, "upsert_sql", self._upsert_sql())

    def _upsert_sql(self) -> str:
        """Insert, or update the row with this id when it is the same tenant's (and still live).

        The ``WHERE`` makes a cross-tenant id (or a soft-deleted row) update nothing, so the
        statement returns no row and the store explains why (ConflictError / NotFoundError).
        """
        placeholders = ", ".join(f"${n}" for n in range(1, len(self.columns) + 1))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in self.columns if c not in _KEPT_ON_UPDATE)
        live = " AND t.deleted_at IS NULL" if self.soft_delete else ""
        return (
            f"INSERT INTO {self.name} AS t ({self.select_list}) VALUES ({placeholders}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates} "
            f"WHERE t.tenant_id = EXCLUDED.tenant_id{live} RETURNING t.id"
        )

    def values(self, model: M) -> list[Any]:
        """Query arguments in column order (JSON columns as text, ``None`` as SQL NULL)."""
        data = model.model_dump()
        if self.json_columns:
            as_json = model.model_dump(mode="json", include=set(self.json_columns))
            for column in self.json_columns:
                data[column] = None if as_json[column] is None else json_text(as_json[column])
        return [data[column] for column in self.columns]

    def from_record(self, record: asyncpg.Record) -> M:
        data = {column: record[column] for column in self.columns}
        for column in self.json_columns:
            if data[column] is not None:
                data[column] = json.loads(data[column])
        return self.model.model_validate(data)

    def from_records(self, records: Sequence[asyncpg.Record]) -> list[M]:
        return [self.from_record(record) for record in records]


AGENTS = Table("agents", Agent)
RULES = Table("rules", Rule, json_columns=("attached_tool_ids", "attached_template_ids"))
SCENARIOS = Table("scenarios", Scenario, json_columns=("steps", "tags"))
TEMPLATES = Table("templates", Template)
VARIABLES = Table("variables", Variable, json_columns=("default_value",))
TOOL_ACTIVATIONS = Table(
    "tool_activations", ToolActivation, json_columns=("policy_overrides",), soft_delete=False
)
MIGRATION_PLANS = Table(
    "migration_plans",
    MigrationPlan,
    json_columns=("transformation_map", "anchor_policies", "scope_filter"),
    soft_delete=False,
)
