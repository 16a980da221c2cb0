"""Row <-> model mapping and SQL text for the PostgreSQL ConfigStore.

Each model field has its own column of the same name (schema: revision 0002); lists and dicts
that are never queried are JSONB columns named after their field. JSON is passed as text (the
pool registers no JSON codec) and SQL ``NULL`` stands for a ``None`` JSON field. Vectors go
through the pool's pgvector codec as ``list[float]``.

SQL is built once, at import, from the column lists, so every statement text is constant and
asyncpg's prepared-statement cache hits.

Revisions (revision 0006): the store keeps ``revision``. An insert writes the model's value (the
store sets it to 1 first), an upsert's update and a conditional update (``update_sql``, which
also requires the expected revision) write ``t.revision + 1``. Scenarios have one column that is
no model field, ``transition_embeddings`` (bytea, see ``scenario_codec``); their ``steps`` JSON
leaves the embeddings out, and ``keep_version`` makes every update refuse a lower ``version``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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
    "STEP_EMBEDDINGS",
    "TEMPLATES",
    "TOOL_ACTIVATIONS",
    "VARIABLES",
    "Table",
]

M = TypeVar("M", bound=BaseModel)

# Columns an update never sets from the model: identity, ownership by tenant, the first save's
# time, and the revision (the database increments it).
_KEPT_ON_UPDATE = frozenset({"id", "tenant_id", "created_at", "revision"})
STEP_EMBEDDINGS: dict[str, Any] = {
    "steps": {"__all__": {"transitions": {"__all__": {"condition_embedding"}}}}
}


@dataclass(frozen=True)
class Table(Generic[M]):
    """One table: its model, columns (model fields, then ``extra_columns``) and its statements."""

    name: str
    model: type[M]
    json_columns: tuple[str, ...] = ()
    soft_delete: bool = True
    extra_columns: tuple[str, ...] = ()
    json_exclude: Mapping[str, Any] | None = None
    keep_version: bool = False
    model_columns: tuple[str, ...] = field(init=False)
    columns: tuple[str, ...] = field(init=False)
    select_list: str = field(init=False)
    upsert_sql: str = field(init=False)
    update_sql: str = field(init=False)

    def __post_init__(self) -> None:
        model_columns = tuple(self.model.model_fields)
        object.__setattr__(self, "model_columns", model_columns)
        object.__setattr__(self, "columns", model_columns + self.extra_columns)
        object.__setattr__(self, "select_list", ", ".join(model_columns))
        object.__setattr__(self, "upsert_sql", self._upsert_sql())
        object.__setattr__(self, "update_sql", self._update_sql())

    def _upsert_sql(self) -> str:
        """Insert, or update the row with this id when it is the same tenant's (and still live,
        and for scenarios not of a higher version).

        The ``WHERE`` makes a cross-tenant id (or a soft-deleted row) update nothing, so the
        statement returns no row and the store explains why (ConflictError / NotFoundError).
        """
        placeholders = ", ".join(f"${n}" for n in range(1, len(self.columns) + 1))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in self.columns if c not in _KEPT_ON_UPDATE)
        live = " AND t.deleted_at IS NULL" if self.soft_delete else ""
        version = " AND t.version <= EXCLUDED.version" if self.keep_version else ""
        revision = ", revision = t.revision + 1" if "revision" in self.model_columns else ""
        return (
            f"INSERT INTO {self.name} AS t ({', '.join(self.columns)}) VALUES ({placeholders}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}{revision} "
            f"WHERE t.tenant_id = EXCLUDED.tenant_id{live}{version} RETURNING t.id"
        )

    def _update_sql(self) -> str:
        """Update the live row of this id and tenant only if its revision is the expected one
        (and for scenarios its version is not higher); no row back otherwise. Arguments:
        ``update_values``. Empty for a table without revisions."""
        if "revision" not in self.model_columns:
            return ""
        updated = self._updated_columns()
        updates = ", ".join(f"{c} = ${n}" for n, c in enumerate(updated, start=1))
        key = len(updated)
        live = " AND t.deleted_at IS NULL" if self.soft_delete else ""
        version = f" AND t.version <= ${updated.index('version') + 1}" if self.keep_version else ""
        return (
            f"UPDATE {self.name} AS t SET {updates}, revision = t.revision + 1 "
            f"WHERE t.id = ${key + 1} AND t.tenant_id = ${key + 2} AND t.revision = ${key + 3}"
            f"{live}{version} RETURNING t.id"
        )

    def _updated_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c not in _KEPT_ON_UPDATE)

    def update_values(
        self, model: M, expected_revision: int, extra: Mapping[str, Any] | None = None
    ) -> list[Any]:
        """Arguments of ``update_sql``: the updated columns, then id, tenant_id, the revision."""
        data = dict(zip(self.columns, self.values(model, extra), strict=True))
        return [data[c] for c in self._updated_columns()] + [data["id"], data["tenant_id"], expected_revision]

    def values(self, model: M, extra: Mapping[str, Any] | None = None) -> list[Any]:
        """Query arguments in column order (JSON columns as text, ``None`` as SQL NULL), then the
        values of ``extra_columns`` from ``extra``."""
        data = model.model_dump()
        if self.json_columns:
            as_json = model.model_dump(mode="json", include=set(self.json_columns), exclude=self.json_exclude)
            for column in self.json_columns:
                data[column] = None if as_json[column] is None else json_text(as_json[column])
        data.update(extra or {})
        return [data[column] for column in self.columns]

    def from_record(self, record: asyncpg.Record) -> M:
        data = {column: record[column] for column in self.model_columns}
        for column in self.json_columns:
            if data[column] is not None:
                data[column] = json.loads(data[column])
        return self.model.model_validate(data)

    def from_records(self, records: Sequence[asyncpg.Record]) -> list[M]:
        return [self.from_record(record) for record in records]


AGENTS = Table("agents", Agent)
RULES = Table(
    "rules",
    Rule,
    json_columns=("attached_tool_ids", "attached_template_ids", "forbid_patterns", "require_patterns"),
)
SCENARIOS = Table(
    "scenarios",
    Scenario,
    json_columns=("steps", "tags"),
    extra_columns=("transition_embeddings",),
    json_exclude=STEP_EMBEDDINGS,
    keep_version=True,
)
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
