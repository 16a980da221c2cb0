"""PostgreSQL ConfigStore, part two: tool activations, migration plans and scenario archives.

Choices (the in-memory store makes the same ones):
- ``save_tool_activation`` upserts on the unique (tenant_id, agent_id, tool_id); the existing
  activation keeps its id and ``created_at``. An id already used by a different activation (of
  any tenant) is a ConflictError: the primary key refuses it even under concurrent writes;
- ``get_migration_plan_for_versions`` returns the newest matching plan (created_at desc, id);
- archives are JSONB snapshots keyed (tenant_id, scenario_id, version), their transition
  embeddings in a bytea like the live row's (``scenario_codec``); a second archive of a version
  is a ConflictError;
- ``save_tool_activation(..., expected_revision=n)`` is one ``UPDATE ... WHERE revision = n`` on
  the (tenant_id, agent_id, tool_id) row.
"""

from __future__ import annotations

from uuid import UUID

from focal.alignment.models import MigrationPlan, MigrationPlanStatus, Scenario, ToolActivation
from focal.alignment.stores import config_checks as checks
from focal.alignment.stores import revisions
from focal.alignment.stores.postgres_base import Connection, PostgresConfigBase
from focal.alignment.stores.postgres_rows import MIGRATION_PLANS, STEP_EMBEDDINGS, TOOL_ACTIVATIONS
from focal.alignment.stores.postgres_scenarios import ARCHIVE_SELECT, archived_scenario_from_record
from focal.alignment.stores.scenario_codec import prepared_scenario
from focal.db.translate import translate_pg_errors
from focal.errors import ConflictError, InvalidDataError
from focal.models import utc_now
from focal.validation import check_int4, check_limit, check_no_nul

__all__ = ["PostgresPlansAndActivations"]

_ACTIVATION_PLACEHOLDERS = ", ".join(f"${n}" for n in range(1, len(TOOL_ACTIVATIONS.columns) + 1))
_UPSERT_ACTIVATION_SQL = (
    f"INSERT INTO tool_activations AS t ({TOOL_ACTIVATIONS.select_list}) VALUES ({_ACTIVATION_PLACEHOLDERS}) "
    "ON CONFLICT (tenant_id, agent_id, tool_id) DO UPDATE SET enabled = EXCLUDED.enabled, "
    "policy_overrides = EXCLUDED.policy_overrides, updated_at = EXCLUDED.updated_at, "
    "revision = t.revision + 1 RETURNING t.id"
)
_UPDATE_ACTIVATION_SQL = (
    "UPDATE tool_activations AS t SET enabled = $1, policy_overrides = $2, updated_at = $3, "
    "revision = t.revision + 1 WHERE tenant_id = $4 AND agent_id = $5 AND tool_id = $6 AND revision = $7 "
    "RETURNING t.id"
)
_ACTIVATIONS = (
    f"SELECT {TOOL_ACTIVATIONS.select_list} FROM tool_activations WHERE tenant_id = $1 AND agent_id = $2"
)
_PLANS = f"SELECT {MIGRATION_PLANS.select_list} FROM migration_plans WHERE tenant_id = $1"


class PostgresPlansAndActivations(PostgresConfigBase):
    # --- tool activations (hard delete) -------------------------------------------------------

    async def get_tool_activation(
        self, tenant_id: UUID, agent_id: UUID, tool_id: str
    ) -> ToolActivation | None:
        check_no_nul(tool_id, "tool_id")
        activation: ToolActivation | None = await self._fetch_one(
            TOOL_ACTIVATIONS,
            f"{_ACTIVATIONS} AND tool_id = $3",
            tenant_id,
            agent_id,
            tool_id,
            operation="get_tool_activation",
            tenant_id=tenant_id,
        )
        return activation

    async def get_tool_activations(self, tenant_id: UUID, agent_id: UUID) -> list[ToolActivation]:
        sql = f"{_ACTIVATIONS} ORDER BY tool_id, id"
        return await self._fetch(
            TOOL_ACTIVATIONS, sql, tenant_id, agent_id, operation="get_tool_activations", tenant_id=tenant_id
        )

    async def save_tool_activation(
        self, activation: ToolActivation, *, expected_revision: int | None = None
    ) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row = checks.checked_tool_activation(activation)
        row.updated_at = utc_now()
        row.revision = 1  # what an insert writes; an update increments the stored revision
        with translate_pg_errors("save_tool_activation", tenant_id=row.tenant_id):
            async with self._pool.acquire() as connection, connection.transaction():
                await self._lock_live_agent(connection, row.tenant_id, row.agent_id)
                if expected is not None:
                    return await self._update_activation(connection, row, expected)
                holder = await connection.fetchrow(
                    "SELECT tenant_id, agent_id, tool_id FROM tool_activations WHERE id = $1", row.id
                )
                if holder is not None and tuple(holder) != (row.tenant_id, row.agent_id, row.tool_id):
                    raise ConflictError(f"tool activation id {row.id} is already used by another activation")
                row_id: UUID = await connection.fetchval(
                    _UPSERT_ACTIVATION_SQL, *TOOL_ACTIVATIONS.values(row)
                )
                return row_id

    @staticmethod
    async def _update_activation(connection: Connection, row: ToolActivation, expected: int) -> UUID:
        overrides = TOOL_ACTIVATIONS.values(row)[TOOL_ACTIVATIONS.columns.index("policy_overrides")]
        key = (row.tenant_id, row.agent_id, row.tool_id)
        row_id: UUID | None = await connection.fetchval(
            _UPDATE_ACTIVATION_SQL, row.enabled, overrides, row.updated_at, *key, expected
        )
        if row_id is not None:
            return row_id
        stored = await connection.fetchval(
            "SELECT revision FROM tool_activations WHERE tenant_id = $1 AND agent_id = $2 AND tool_id = $3",
            *key,
        )
        if stored is None:
            raise revisions.missing_row("ToolActivation", row.tool_id)
        raise revisions.stale_revision("ToolActivation", row.tool_id, stored, expected)

    async def delete_tool_activation(self, tenant_id: UUID, agent_id: UUID, tool_id: str) -> bool:
        check_no_nul(tool_id, "tool_id")
        sql = "DELETE FROM tool_activations WHERE tenant_id = $1 AND agent_id = $2 AND tool_id = $3"
        with translate_pg_errors("delete_tool_activation", tenant_id=tenant_id):
            status = await self._pool.execute(sql, tenant_id, agent_id, tool_id)
        return bool(status == "DELETE 1")

    # --- migration plans (hard delete) --------------------------------------------------------

    async def get_migration_plan(self, tenant_id: UUID, plan_id: UUID) -> MigrationPlan | None:
        plan: MigrationPlan | None = await self._fetch_one(
            MIGRATION_PLANS,
            f"{_PLANS} AND id = $2",
            tenant_id,
            plan_id,
            operation="get_migration_plan",
            tenant_id=tenant_id,
        )
        return plan

    async def get_migration_plan_for_versions(
        self, tenant_id: UUID, scenario_id: UUID, from_version: int, to_version: int
    ) -> MigrationPlan | None:
        check_int4(from_version, "from_version")
        check_int4(to_version, "to_version")
        sql = (
            f"{_PLANS} AND scenario_id = $2 AND from_version = $3 AND to_version = $4 "
            "ORDER BY created_at DESC, id LIMIT 1"
        )
        args = (tenant_id, scenario_id, from_version, to_version)
        plan: MigrationPlan | None = await self._fetch_one(
            MIGRATION_PLANS, sql, *args, operation="get_migration_plan_for_versions", tenant_id=tenant_id
        )
        return plan

    async def save_migration_plan(self, plan: MigrationPlan) -> UUID:
        row = checks.checked_migration_plan(plan)
        with translate_pg_errors("save_migration_plan", tenant_id=row.tenant_id):
            row_id: UUID | None = await self._pool.fetchval(
                MIGRATION_PLANS.upsert_sql, *MIGRATION_PLANS.values(row)
            )
        if row_id is None:
            raise ConflictError(f"migration plan id {row.id} belongs to another tenant")
        return row_id

    async def list_migration_plans(
        self,
        tenant_id: UUID,
        *,
        scenario_id: UUID | None = None,
        status: MigrationPlanStatus | None = None,
        limit: int = 50,
    ) -> list[MigrationPlan]:
        check_limit(limit)
        wanted_status = checks.checked_status(status)
        sql = (
            f"{_PLANS} AND ($2::uuid IS NULL OR scenario_id = $2::uuid) "
            "AND ($3::text IS NULL OR status = $3::text) "
            "ORDER BY created_at DESC, id LIMIT $4"
        )
        args = (tenant_id, scenario_id, wanted_status, limit)
        return await self._fetch(
            MIGRATION_PLANS, sql, *args, operation="list_migration_plans", tenant_id=tenant_id
        )

    async def delete_migration_plan(self, tenant_id: UUID, plan_id: UUID) -> bool:
        with translate_pg_errors("delete_migration_plan", tenant_id=tenant_id):
            status = await self._pool.execute(
                "DELETE FROM migration_plans WHERE tenant_id = $1 AND id = $2", tenant_id, plan_id
            )
        return bool(status == "DELETE 1")

    # --- scenario archives --------------------------------------------------------------------

    async def archive_scenario_version(self, tenant_id: UUID, scenario: Scenario) -> None:
        snapshot, embeddings = await prepared_scenario(scenario, self.embedding_dimensions, snapshot=True)
        if snapshot.tenant_id != tenant_id:
            raise InvalidDataError(f"scenario {snapshot.id} belongs to another tenant than {tenant_id}")
        with translate_pg_errors("archive_scenario_version", tenant_id=tenant_id):
            archived = await self._pool.fetchval(
                "INSERT INTO scenario_archives "
                "(tenant_id, scenario_id, version, scenario, transition_embeddings) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING version",
                tenant_id,
                snapshot.id,
                snapshot.version,
                snapshot.model_dump_json(exclude=STEP_EMBEDDINGS),
                embeddings,
            )
        if archived is None:
            raise ConflictError(f"scenario {snapshot.id} version {snapshot.version} is already archived")

    async def get_archived_scenario(
        self, tenant_id: UUID, scenario_id: UUID, version: int
    ) -> Scenario | None:
        check_int4(version, "version")
        with translate_pg_errors("get_archived_scenario", tenant_id=tenant_id):
            record = await self._pool.fetchrow(
                f"SELECT {ARCHIVE_SELECT} FROM scenario_archives "
                "WHERE tenant_id = $1 AND scenario_id = $2 AND version = $3",
                tenant_id,
                scenario_id,
                version,
            )
        return None if record is None else await archived_scenario_from_record(record)
