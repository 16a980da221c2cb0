"""The PostgreSQL ConfigStore (asyncpg + pgvector), schema from revision 0002.

Behaves exactly like ``InMemoryConfigStore`` (the contract suite runs both); how it gets there:

- input is checked by ``config_checks`` before any database call, so bad input raises
  ``InvalidDataError`` and touches nothing; every database call runs inside
  ``translate_pg_errors`` (unique violation -> ConflictError, ...);
- ``save_*`` is one ``INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE t.tenant_id =
  EXCLUDED.tenant_id AND t.deleted_at IS NULL``: no row back means the id is another tenant's
  (ConflictError) or soft-deleted (NotFoundError), told apart by one more read;
- live-name uniqueness is the partial unique indexes' job, so concurrent saves cannot both win;
- a child (rule, scenario, template, variable, tool activation) is written in a transaction that
  first locks its agent row ``FOR SHARE`` and requires it live; ``delete_agent`` updates that row,
  so it waits for such a save and then soft-deletes the new child too (no orphan can slip in);
- revisions: ``save_*(..., expected_revision=n)`` is one ``UPDATE ... WHERE revision = n``
  (``postgres_rows.Table.update_sql``), so of concurrent writers expecting one revision exactly
  one updates the row; a scenario's upsert and update also require ``version <= new version``;
- scenarios keep their transition embeddings in a bytea column and are read step by step
  (``postgres_scenarios``, ``scenario_codec``);
- ``vector_search_rules``: see ``postgres_search``; tool activations, migration plans and
  archives: see ``postgres_plans``; tool definitions: ``postgres_tools``; shared helpers:
  ``postgres_base``; row mapping: ``postgres_rows``.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from focal.alignment.models import (
    Agent,
    Rule,
    Scenario,
    Scope,
    Template,
    Variable,
)
from focal.alignment.stores import config_checks as checks
from focal.alignment.stores import postgres_search as search
from focal.alignment.stores import revisions
from focal.alignment.stores.config_store import ConfigStore, ScopeSelector
from focal.alignment.stores.postgres_base import LIVE
from focal.alignment.stores.postgres_plans import PostgresPlansAndActivations
from focal.alignment.stores.postgres_rows import AGENTS, RULES, SCENARIOS, TEMPLATES, VARIABLES
from focal.alignment.stores.postgres_scenarios import scenario_from_record, scenario_select
from focal.alignment.stores.postgres_tools import PostgresToolDefinitions
from focal.alignment.stores.scenario_codec import prepared_scenario
from focal.db.translate import translate_pg_errors
from focal.models import utc_now
from focal.validation import check_limit, check_no_nul

__all__ = ["PostgresConfigStore"]

_CHILD_TABLES = (RULES, SCENARIOS, TEMPLATES, VARIABLES)
_GET_SCENARIO = (
    f"SELECT {scenario_select(with_embeddings=True)} FROM scenarios "
    f"WHERE tenant_id = $1 AND id = $2 AND {LIVE}"
)
_GET_SCENARIOS = {
    with_embeddings: (
        f"SELECT {scenario_select(with_embeddings=with_embeddings)} FROM scenarios "
        f"WHERE tenant_id = $1 AND agent_id = $2 AND {LIVE} "
        "AND (NOT $3::boolean OR enabled) ORDER BY name, id"
    )
    for with_embeddings in (True, False)
}


# Hard constraints are read on every turn: without the embedding (kilobytes a turn does not need),
# through the partial index rules_hard_constraints_idx (revision 0008). Scope arguments as in
# postgres_search: $3 "every scope" flag, $4 scopes admitted whole, $5/$6 (scope, scope_id) pairs.
_HARD_CONSTRAINTS = (
    "SELECT "
    + ", ".join("NULL::vector AS embedding" if c == "embedding" else c for c in RULES.model_columns)
    + f" FROM rules WHERE tenant_id = $1 AND agent_id = $2 AND {LIVE} AND enabled AND is_hard_constraint "
    "AND ($3::boolean OR scope = ANY($4::text[]) "
    "OR EXISTS (SELECT 1 FROM unnest($5::text[], $6::uuid[]) AS admitted(scope, scope_id) "
    "WHERE admitted.scope = rules.scope AND admitted.scope_id = rules.scope_id)) "
    "ORDER BY priority DESC, created_at, id"
)


class PostgresConfigStore(PostgresToolDefinitions, PostgresPlansAndActivations, ConfigStore):
    """ConfigStore on PostgreSQL. The pool belongs to the caller, who closes it."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        embedding_dimensions: int = 1536,
        exact_scan_max_rows: int = search.DEFAULT_EXACT_SCAN_MAX_ROWS,
    ) -> None:
        """``exact_scan_max_rows``: rule searches whose scope holds at most this many rules score
        every one of them; larger ones use the HNSW index (see ``postgres_search``)."""
        super().__init__(pool, embedding_dimensions=embedding_dimensions)
        self._rule_search = search.RuleSearch(embedding_dimensions, exact_scan_max_rows=exact_scan_max_rows)

    # --- agents -------------------------------------------------------------------------------

    async def get_agent(self, tenant_id: UUID, agent_id: UUID) -> Agent | None:
        agent: Agent | None = await self._get_live(AGENTS, tenant_id, agent_id, "get_agent")
        return agent

    async def get_agents(
        self, tenant_id: UUID, *, enabled_only: bool = False, limit: int = 20, offset: int = 0
    ) -> tuple[list[Agent], int]:
        check_limit(limit, offset)
        where = f"tenant_id = $1 AND {LIVE} AND (NOT $2::boolean OR enabled)"
        with translate_pg_errors("get_agents", tenant_id=tenant_id):
            async with (
                self._pool.acquire() as connection,
                connection.transaction(isolation="repeatable_read"),
            ):
                total = await connection.fetchval(
                    f"SELECT count(*) FROM agents WHERE {where}", tenant_id, enabled_only
                )
                records = await connection.fetch(
                    f"SELECT {AGENTS.select_list} FROM agents WHERE {where} "
                    "ORDER BY created_at DESC, id LIMIT $3 OFFSET $4",
                    tenant_id,
                    enabled_only,
                    limit,
                    offset,
                )
        return AGENTS.from_records(records), int(total)

    async def save_agent(self, agent: Agent, *, expected_revision: int | None = None) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row = checks.checked_agent(agent)
        # The in-memory store's words for the same conflict (never the driver's text).
        taken = {
            "agents_live_name_key": f"tenant {row.tenant_id} already has a live agent named {row.name!r}"
        }
        with translate_pg_errors("save_agent", tenant_id=row.tenant_id, messages=taken):
            async with self._pool.acquire() as connection:
                return await self._upsert(connection, AGENTS, row, expected_revision=expected)

    async def delete_agent(self, tenant_id: UUID, agent_id: UUID) -> bool:
        now = utc_now()
        with translate_pg_errors("delete_agent", tenant_id=tenant_id):
            async with self._pool.acquire() as connection, connection.transaction():
                status = await connection.execute(
                    "UPDATE agents SET deleted_at = $3, updated_at = $3 "
                    f"WHERE tenant_id = $1 AND id = $2 AND {LIVE}",
                    tenant_id,
                    agent_id,
                    now,
                )
                if status != "UPDATE 1":
                    return False
                for table in _CHILD_TABLES:
                    await connection.execute(
                        f"UPDATE {table.name} SET deleted_at = $3, updated_at = $3 "
                        f"WHERE tenant_id = $1 AND agent_id = $2 AND {LIVE}",
                        tenant_id,
                        agent_id,
                        now,
                    )
                await connection.execute(
                    "DELETE FROM tool_activations WHERE tenant_id = $1 AND agent_id = $2", tenant_id, agent_id
                )
        return True

    # --- rules --------------------------------------------------------------------------------

    async def get_rule(self, tenant_id: UUID, rule_id: UUID) -> Rule | None:
        rule: Rule | None = await self._get_live(RULES, tenant_id, rule_id, "get_rule")
        return rule

    async def get_rules(
        self,
        tenant_id: UUID,
        agent_id: UUID,
        *,
        scope: Scope | None = None,
        scope_id: UUID | None = None,
        enabled_only: bool = True,
    ) -> list[Rule]:
        wanted_scope = checks.checked_scope(scope)
        sql = (
            f"SELECT {RULES.select_list} FROM rules WHERE tenant_id = $1 AND agent_id = $2 AND {LIVE} "
            "AND ($3::text IS NULL OR scope = $3::text) AND ($4::uuid IS NULL OR scope_id = $4::uuid) "
            "AND (NOT $5::boolean OR enabled) ORDER BY priority DESC, created_at, id"
        )
        args = (tenant_id, agent_id, wanted_scope, scope_id, enabled_only)
        return await self._fetch(RULES, sql, *args, operation="get_rules", tenant_id=tenant_id)

    async def save_rule(self, rule: Rule, *, expected_revision: int | None = None) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row = checks.checked_rule(rule, self.embedding_dimensions)
        return await self._save_child(RULES, row, "save_rule", expected_revision=expected)

    async def delete_rule(self, tenant_id: UUID, rule_id: UUID) -> bool:
        return await self._soft_delete(RULES, tenant_id, rule_id, "delete_rule")

    async def vector_search_rules(
        self,
        query_embedding: Sequence[float],
        tenant_id: UUID,
        agent_id: UUID,
        *,
        scopes: ScopeSelector | None = None,
        limit: int = 10,
        min_score: float = 0.0,
        embedding_model: str | None = None,
    ) -> list[tuple[Rule, float]]:
        query, selector = checks.checked_rule_search(
            query_embedding,
            self.embedding_dimensions,
            scopes=scopes,
            limit=limit,
            min_score=min_score,
            embedding_model=embedding_model,
        )
        with translate_pg_errors("vector_search_rules", tenant_id=tenant_id):
            async with self._pool.acquire() as connection:
                hits = await self._rule_search.run(
                    connection,
                    query,
                    tenant_id,
                    agent_id,
                    selector=selector,
                    embedding_model=embedding_model,
                    limit=limit,
                    min_score=min_score,
                )
        return [(RULES.from_record(record), score) for record, score in hits]

    async def get_hard_constraints(
        self, tenant_id: UUID, agent_id: UUID, *, scopes: ScopeSelector | None = None
    ) -> list[Rule]:
        selector = checks.checked_scopes(scopes)
        pairs = [(scope.value, scope_id) for scope, scope_id in selector or () if scope_id is not None]
        args = (
            tenant_id,
            agent_id,
            selector is None,
            [scope.value for scope, scope_id in selector or () if scope_id is None],
            [scope for scope, _ in pairs],
            [scope_id for _, scope_id in pairs],
        )
        return await self._fetch(
            RULES, _HARD_CONSTRAINTS, *args, operation="get_hard_constraints", tenant_id=tenant_id
        )

    # --- scenarios ----------------------------------------------------------------------------

    async def get_scenario(
        self, tenant_id: UUID, scenario_id: UUID, *, embeddings_of_step: UUID | None = None
    ) -> Scenario | None:
        with translate_pg_errors("get_scenario", tenant_id=tenant_id):
            record = await self._pool.fetchrow(_GET_SCENARIO, tenant_id, scenario_id)
        return None if record is None else await scenario_from_record(record, only_step=embeddings_of_step)

    async def get_scenarios(
        self,
        tenant_id: UUID,
        agent_id: UUID,
        *,
        enabled_only: bool = True,
        include_transition_embeddings: bool = True,
    ) -> list[Scenario]:
        sql = _GET_SCENARIOS[bool(include_transition_embeddings)]
        with translate_pg_errors("get_scenarios", tenant_id=tenant_id):
            records = await self._pool.fetch(sql, tenant_id, agent_id, enabled_only)
        return [await scenario_from_record(record) for record in records]

    async def save_scenario(self, scenario: Scenario, *, expected_revision: int | None = None) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row, embeddings = await prepared_scenario(scenario, self.embedding_dimensions)
        return await self._save_child(
            SCENARIOS,
            row,
            "save_scenario",
            expected_revision=expected,
            extra={"transition_embeddings": embeddings},
        )

    async def delete_scenario(self, tenant_id: UUID, scenario_id: UUID) -> bool:
        return await self._soft_delete(SCENARIOS, tenant_id, scenario_id, "delete_scenario")

    # --- templates ----------------------------------------------------------------------------

    async def get_template(self, tenant_id: UUID, template_id: UUID) -> Template | None:
        template: Template | None = await self._get_live(TEMPLATES, tenant_id, template_id, "get_template")
        return template

    async def get_templates(
        self, tenant_id: UUID, agent_id: UUID, *, scope: Scope | None = None, scope_id: UUID | None = None
    ) -> list[Template]:
        wanted_scope = checks.checked_scope(scope)
        sql = (
            f"SELECT {TEMPLATES.select_list} FROM templates "
            f"WHERE tenant_id = $1 AND agent_id = $2 AND {LIVE} "
            "AND ($3::text IS NULL OR scope = $3::text) AND ($4::uuid IS NULL OR scope_id = $4::uuid) "
            "ORDER BY name, id"
        )
        args = (tenant_id, agent_id, wanted_scope, scope_id)
        return await self._fetch(TEMPLATES, sql, *args, operation="get_templates", tenant_id=tenant_id)

    async def save_template(self, template: Template, *, expected_revision: int | None = None) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row = checks.checked_template(template)
        return await self._save_child(TEMPLATES, row, "save_template", expected_revision=expected)

    async def delete_template(self, tenant_id: UUID, template_id: UUID) -> bool:
        return await self._soft_delete(TEMPLATES, tenant_id, template_id, "delete_template")

    # --- variables ----------------------------------------------------------------------------

    async def get_variable(self, tenant_id: UUID, variable_id: UUID) -> Variable | None:
        variable: Variable | None = await self._get_live(VARIABLES, tenant_id, variable_id, "get_variable")
        return variable

    async def get_variables(self, tenant_id: UUID, agent_id: UUID) -> list[Variable]:
        sql = (
            f"SELECT {VARIABLES.select_list} FROM variables "
            f"WHERE tenant_id = $1 AND agent_id = $2 AND {LIVE} "
            "ORDER BY name, id"
        )
        return await self._fetch(
            VARIABLES, sql, tenant_id, agent_id, operation="get_variables", tenant_id=tenant_id
        )

    async def get_variable_by_name(self, tenant_id: UUID, agent_id: UUID, name: str) -> Variable | None:
        check_no_nul(name, "name")
        sql = (
            f"SELECT {VARIABLES.select_list} FROM variables "
            f"WHERE tenant_id = $1 AND agent_id = $2 AND name = $3 AND {LIVE}"
        )
        found = await self._fetch(
            VARIABLES, sql, tenant_id, agent_id, name, operation="get_variable_by_name", tenant_id=tenant_id
        )
        return found[0] if found else None

    async def save_variable(self, variable: Variable, *, expected_revision: int | None = None) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row = checks.checked_variable(variable)
        taken = {
            "variables_live_name_key": f"agent {row.agent_id} already has a live variable named {row.name!r}"
        }
        return await self._save_child(
            VARIABLES, row, "save_variable", messages=taken, expected_revision=expected
        )

    async def delete_variable(self, tenant_id: UUID, variable_id: UUID) -> bool:
        return await self._soft_delete(VARIABLES, tenant_id, variable_id, "delete_variable")
