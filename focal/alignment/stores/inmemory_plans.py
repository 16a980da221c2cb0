"""In-memory ConfigStore, part one: the state, tool activations, migration plans, archives.

``InMemoryConfigStore`` (``inmemory.py``) adds agents, rules, scenarios, templates and
variables on top. Choices (the PostgreSQL store makes the same ones):
- ``save_tool_activation`` upserts on (tenant_id, agent_id, tool_id): the existing activation
  keeps its id and ``created_at``; an id already used by a different activation is a
  ConflictError;
- ``get_migration_plan_for_versions`` returns the newest matching plan (created_at desc, id),
  as several plans (e.g. a rejected one and a new draft) may exist for the same versions;
- migration plans and archives need no stored scenario (a plan may outlive a deleted scenario);
- scenarios (live and archived) are kept without transition embeddings, which are kept packed
  (``scenario_codec``), and are rebuilt step by step on every read (``assembled_copy``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from focal.alignment.models import (
    Agent,
    MigrationPlan,
    MigrationPlanStatus,
    Rule,
    Scenario,
    ScenarioStep,
    Template,
    ToolActivation,
    Variable,
)
from focal.alignment.stores import config_checks as checks
from focal.alignment.stores import revisions
from focal.alignment.stores.scenario_codec import assemble_scenario, prepared_scenario
from focal.errors import ConflictError, InvalidDataError, NotFoundError
from focal.models import utc_now
from focal.validation import check_int4, check_limit, check_no_nul

__all__ = ["InMemoryPlansAndActivations", "assembled_copy", "copy_of"]

_ID_BYTES = 16

_SoftDeleted = TypeVar("_SoftDeleted", Agent, Rule, Scenario, Template, Variable)
_Any = TypeVar("_Any", Agent, Rule, Scenario, Template, Variable, ToolActivation, MigrationPlan)


def copy_of(model: _Any) -> _Any:
    """A deep copy: callers never hold a reference to stored state."""
    return model.model_copy(deep=True)


def _copied_step(step: ScenarioStep) -> tuple[ScenarioStep, int]:
    """A deep copy of a stored step and the work it took for the loop slicer: about the step's
    size (its texts and ids; the stored step has no embeddings)."""
    size = len(step.name) + len(step.description or "") + sum(map(len, step.collects_fields))
    size += _ID_BYTES * (1 + len(step.rule_ids) + len(step.template_ids))
    size += sum(len(t.condition_text) + _ID_BYTES for t in step.transitions)
    # Not model_copy(deep=True): copy.deepcopy of a step's UUIDs and strings costs ~0.3 ms a step.
    # Every field holds immutable values or lists of them, but transitions: new lists, new
    # transition models (whose fields are immutable; their embeddings are attached afresh).
    fresh: dict[str, object] = {name: list(value) for name, value in step if isinstance(value, list)}
    fresh["transitions"] = [transition.model_copy() for transition in step.transitions]
    return step.model_copy(update=fresh), size


async def assembled_copy(
    stored: Scenario, embeddings: bytes | None, *, only_step: UUID | None = None
) -> Scenario:
    """A fresh scenario from a stored one (without transition embeddings) and its packed
    embeddings (None: leave them out), built step by step like the PostgreSQL store does, so a
    large scenario never holds the event loop for long here either."""
    fields = stored.model_dump(exclude={"steps"})  # before any yield: a save may replace the row
    return await assemble_scenario(fields, list(stored.steps), _copied_step, embeddings, only_step=only_step)


class InMemoryPlansAndActivations:
    """Every table of the in-memory store, and the methods of the hard-deleted kinds."""

    def __init__(self, *, embedding_dimensions: int = 1536) -> None:
        if embedding_dimensions < 1:
            raise InvalidDataError(f"embedding_dimensions must be >= 1, got {embedding_dimensions}")
        self.embedding_dimensions = embedding_dimensions
        self._agents: dict[UUID, Agent] = {}
        self._rules: dict[UUID, Rule] = {}
        self._scenarios: dict[UUID, Scenario] = {}  # without transition embeddings (scenario_codec)
        self._transition_embeddings: dict[UUID, bytes] = {}  # packed, by scenario id
        self._templates: dict[UUID, Template] = {}
        self._variables: dict[UUID, Variable] = {}
        self._activations: dict[UUID, ToolActivation] = {}
        self._plans: dict[UUID, MigrationPlan] = {}
        self._archives: dict[tuple[UUID, UUID, int], tuple[Scenario, bytes]] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def _live(table: dict[UUID, _SoftDeleted], tenant_id: UUID, row_id: UUID) -> _SoftDeleted | None:
        row = table.get(row_id)
        if row is None or row.tenant_id != tenant_id or row.deleted_at is not None:
            return None
        return row

    def _require_agent(self, tenant_id: UUID, agent_id: UUID) -> None:
        if self._live(self._agents, tenant_id, agent_id) is None:
            raise NotFoundError(f"agent {agent_id} does not exist in tenant {tenant_id}")

    # --- tool activations ---------------------------------------------------------------------

    def _activation(self, tenant_id: UUID, agent_id: UUID, tool_id: str) -> ToolActivation | None:
        check_no_nul(tool_id, "tool_id")
        for row in self._activations.values():
            if row.tenant_id == tenant_id and row.agent_id == agent_id and row.tool_id == tool_id:
                return row
        return None

    async def get_tool_activation(
        self, tenant_id: UUID, agent_id: UUID, tool_id: str
    ) -> ToolActivation | None:
        row = self._activation(tenant_id, agent_id, tool_id)
        return copy_of(row) if row else None

    async def get_tool_activations(self, tenant_id: UUID, agent_id: UUID) -> list[ToolActivation]:
        rows = [
            row
            for row in self._activations.values()
            if row.tenant_id == tenant_id and row.agent_id == agent_id
        ]
        rows.sort(key=lambda row: (row.tool_id, row.id))
        return [copy_of(row) for row in rows]

    async def save_tool_activation(
        self, activation: ToolActivation, *, expected_revision: int | None = None
    ) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row = checks.checked_tool_activation(activation)
        async with self._lock:
            self._require_agent(row.tenant_id, row.agent_id)
            existing = self._activation(row.tenant_id, row.agent_id, row.tool_id)
            if expected is not None:
                if existing is None:
                    raise revisions.missing_row("ToolActivation", row.tool_id)
                if existing.revision != expected:
                    raise revisions.stale_revision("ToolActivation", row.tool_id, existing.revision, expected)
            else:
                holder = self._activations.get(row.id)
                if holder is not None and holder is not existing:
                    raise ConflictError(f"tool activation id {row.id} is already used by another activation")
            if existing is not None:
                row.id, row.created_at = existing.id, existing.created_at
            row.revision = existing.revision + 1 if existing is not None else 1
            row.updated_at = utc_now()
            self._activations[row.id] = row
            return row.id

    async def delete_tool_activation(self, tenant_id: UUID, agent_id: UUID, tool_id: str) -> bool:
        async with self._lock:
            row = self._activation(tenant_id, agent_id, tool_id)
            if row is None:
                return False
            del self._activations[row.id]
            return True

    # --- migration plans ----------------------------------------------------------------------

    def _plans_of(self, tenant_id: UUID, matches: Callable[[MigrationPlan], bool]) -> list[MigrationPlan]:
        rows = [row for row in self._plans.values() if row.tenant_id == tenant_id and matches(row)]
        rows.sort(key=lambda row: row.id)
        rows.sort(key=lambda row: row.created_at, reverse=True)
        return rows

    async def get_migration_plan(self, tenant_id: UUID, plan_id: UUID) -> MigrationPlan | None:
        row = self._plans.get(plan_id)
        return copy_of(row) if row is not None and row.tenant_id == tenant_id else None

    async def get_migration_plan_for_versions(
        self, tenant_id: UUID, scenario_id: UUID, from_version: int, to_version: int
    ) -> MigrationPlan | None:
        check_int4(from_version, "from_version")
        check_int4(to_version, "to_version")
        rows = self._plans_of(
            tenant_id,
            lambda row: (
                (row.scenario_id, row.from_version, row.to_version) == (scenario_id, from_version, to_version)
            ),
        )
        return copy_of(rows[0]) if rows else None

    async def save_migration_plan(self, plan: MigrationPlan) -> UUID:
        row = checks.checked_migration_plan(plan)
        async with self._lock:
            existing = self._plans.get(row.id)
            if existing is not None:
                if existing.tenant_id != row.tenant_id:
                    raise ConflictError(f"migration plan id {row.id} belongs to another tenant")
                row.created_at = existing.created_at
            self._plans[row.id] = row
            return row.id

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
        rows = self._plans_of(
            tenant_id,
            lambda row: (
                (scenario_id is None or row.scenario_id == scenario_id)
                and (wanted_status is None or row.status is wanted_status)
            ),
        )
        return [copy_of(row) for row in rows[:limit]]

    async def delete_migration_plan(self, tenant_id: UUID, plan_id: UUID) -> bool:
        async with self._lock:
            row = self._plans.get(plan_id)
            if row is None or row.tenant_id != tenant_id:
                return False
            del self._plans[plan_id]
            return True

    # --- scenario archives --------------------------------------------------------------------

    async def archive_scenario_version(self, tenant_id: UUID, scenario: Scenario) -> None:
        snapshot, embeddings = await prepared_scenario(scenario, self.embedding_dimensions, snapshot=True)
        if snapshot.tenant_id != tenant_id:
            raise InvalidDataError(f"scenario {snapshot.id} belongs to another tenant than {tenant_id}")
        key = (tenant_id, snapshot.id, snapshot.version)
        async with self._lock:
            if key in self._archives:
                raise ConflictError(f"scenario {snapshot.id} version {snapshot.version} is already archived")
            self._archives[key] = (snapshot, embeddings)

    async def get_archived_scenario(
        self, tenant_id: UUID, scenario_id: UUID, version: int
    ) -> Scenario | None:
        check_int4(version, "version")
        archived = self._archives.get((tenant_id, scenario_id, version))
        return await assembled_copy(*archived) if archived is not None else None
