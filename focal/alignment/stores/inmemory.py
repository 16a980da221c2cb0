"""The in-memory ConfigStore: the reference implementation the contract suite holds others to.

Every rule of ``ConfigStore`` (see its module docstring) holds here, so the PostgreSQL backend
can be compared with it test for test. Choices where the interface is silent:

- rows live in per-kind dicts keyed by id across all tenants, so a cross-tenant id clash is seen
  (``ConflictError``) exactly as a primary key would see it;
- models are validated and deep-copied on the way in (``config_checks``) and deep-copied on the
  way out; vectors stored in ``vector(D)`` columns by PostgreSQL are kept float32-rounded here;
- writes run under one ``asyncio.Lock``, so check-then-write sequences (name uniqueness, agent
  existence) are atomic even if a future change adds an ``await`` inside them;
- an id check comes before a name check: saving a soft-deleted row is a NotFoundError even when
  its name has been reused since (PostgreSQL's ``ON CONFLICT (id)`` decides the same way);
- revisions: ``_check_id`` and ``_write`` under the lock make a conditional save atomic;
- tool activations, migration plans, archives and how scenarios are kept: see ``inmemory_plans``;
  tool definitions: ``inmemory_tools``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TypeVar
from uuid import UUID

from focal.alignment.models import (
    Agent,
    Rule,
    Scenario,
    Scope,
    Template,
    Variable,
)
from focal.alignment.stores import config_checks as checks
from focal.alignment.stores import revisions
from focal.alignment.stores.config_store import ConfigStore, ScopeSelector
from focal.alignment.stores.inmemory_plans import assembled_copy, copy_of
from focal.alignment.stores.inmemory_tools import InMemoryToolDefinitions
from focal.alignment.stores.scenario_codec import prepared_scenario
from focal.errors import ConflictError, NotFoundError
from focal.models import utc_now
from focal.validation import CosineScorer, check_limit, check_no_nul

__all__ = ["InMemoryConfigStore"]

_SoftDeleted = TypeVar("_SoftDeleted", Agent, Rule, Scenario, Template, Variable)
_Child = TypeVar("_Child", Rule, Scenario, Template, Variable)


def _by_name(rows: Iterable[_Child]) -> list[_Child]:
    return sorted(rows, key=lambda row: (row.name, row.id))


class InMemoryConfigStore(InMemoryToolDefinitions, ConfigStore):
    """ConfigStore kept in process memory (tests, development, the offline demo)."""

    # --- shared mechanics ---------------------------------------------------------------------

    @staticmethod
    def _check_id(table: dict[UUID, _SoftDeleted], row: _SoftDeleted, expected_revision: int | None) -> None:
        """Upsert: refuse an id of another tenant (ConflictError) or of a soft-deleted row
        (NotFoundError). Conditional update: the row must be live in this tenant (NotFoundError)
        at ``expected_revision`` (StaleRevisionError)."""
        existing = table.get(row.id)
        kind = type(row).__name__
        if expected_revision is not None:
            if existing is None or existing.tenant_id != row.tenant_id or existing.deleted_at is not None:
                raise revisions.missing_row(kind, row.id)
            if existing.revision != expected_revision:
                raise revisions.stale_revision(kind, row.id, existing.revision, expected_revision)
            return
        if existing is not None:
            if existing.tenant_id != row.tenant_id:
                raise ConflictError(f"{type(row).__name__} id {row.id} belongs to another tenant")
            if existing.deleted_at is not None:
                raise NotFoundError(f"{type(row).__name__} {row.id} was deleted")

    @staticmethod
    def _write(table: dict[UUID, _SoftDeleted], row: _SoftDeleted) -> UUID:
        """Store ``row`` (a checked private copy) after ``_check_id``, keeping ``created_at`` and
        counting the revision."""
        existing = table.get(row.id)
        if existing is not None:
            row.created_at = existing.created_at
        row.revision = existing.revision + 1 if existing is not None else 1
        row.updated_at = utc_now()
        table[row.id] = row
        return row.id

    @staticmethod
    def _soft_delete(table: dict[UUID, _SoftDeleted], tenant_id: UUID, row_id: UUID) -> bool:
        row = InMemoryConfigStore._live(table, tenant_id, row_id)
        if row is None:
            return False
        row.deleted_at = row.updated_at = utc_now()
        return True

    @staticmethod
    def _children(table: dict[UUID, _Child], tenant_id: UUID, agent_id: UUID) -> list[_Child]:
        return [
            row
            for row in table.values()
            if row.tenant_id == tenant_id and row.agent_id == agent_id and row.deleted_at is None
        ]

    @staticmethod
    def _cascade(table: dict[UUID, _Child], tenant_id: UUID, agent_id: UUID, now: datetime) -> None:
        for child in InMemoryConfigStore._children(table, tenant_id, agent_id):
            child.deleted_at = child.updated_at = now

    # --- agents -------------------------------------------------------------------------------

    async def get_agent(self, tenant_id: UUID, agent_id: UUID) -> Agent | None:
        row = self._live(self._agents, tenant_id, agent_id)
        return copy_of(row) if row else None

    async def get_agents(
        self, tenant_id: UUID, *, enabled_only: bool = False, limit: int = 20, offset: int = 0
    ) -> tuple[list[Agent], int]:
        check_limit(limit, offset)
        rows = [
            row
            for row in self._agents.values()
            if row.tenant_id == tenant_id and row.deleted_at is None and (row.enabled or not enabled_only)
        ]
        rows.sort(key=lambda row: row.id)
        rows.sort(key=lambda row: row.created_at, reverse=True)
        return [copy_of(row) for row in rows[offset : offset + limit]], len(rows)

    async def save_agent(self, agent: Agent, *, expected_revision: int | None = None) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row = checks.checked_agent(agent)
        async with self._lock:
            self._check_id(self._agents, row, expected)
            for other in self._agents.values():
                if (
                    other.tenant_id == row.tenant_id
                    and other.name == row.name
                    and other.id != row.id
                    and other.deleted_at is None
                ):
                    raise ConflictError(f"tenant {row.tenant_id} already has a live agent named {row.name!r}")
            return self._write(self._agents, row)

    async def delete_agent(self, tenant_id: UUID, agent_id: UUID) -> bool:
        async with self._lock:
            if not self._soft_delete(self._agents, tenant_id, agent_id):
                return False
            now = utc_now()
            self._cascade(self._rules, tenant_id, agent_id, now)
            self._cascade(self._scenarios, tenant_id, agent_id, now)
            self._cascade(self._templates, tenant_id, agent_id, now)
            self._cascade(self._variables, tenant_id, agent_id, now)
            for activation in list(self._activations.values()):
                if activation.tenant_id == tenant_id and activation.agent_id == agent_id:
                    del self._activations[activation.id]
            return True

    # --- rules --------------------------------------------------------------------------------

    async def get_rule(self, tenant_id: UUID, rule_id: UUID) -> Rule | None:
        row = self._live(self._rules, tenant_id, rule_id)
        return copy_of(row) if row else None

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
        rows = [
            row
            for row in self._children(self._rules, tenant_id, agent_id)
            if (wanted_scope is None or row.scope is wanted_scope)
            and (scope_id is None or row.scope_id == scope_id)
            and (row.enabled or not enabled_only)
        ]
        rows.sort(key=lambda row: (-row.priority, row.created_at, row.id))
        return [copy_of(row) for row in rows]

    async def save_rule(self, rule: Rule, *, expected_revision: int | None = None) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row = checks.checked_rule(rule, self.embedding_dimensions)
        return await self._save_child(self._rules, row, expected)

    async def delete_rule(self, tenant_id: UUID, rule_id: UUID) -> bool:
        async with self._lock:
            return self._soft_delete(self._rules, tenant_id, rule_id)

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
        score_of = CosineScorer(query)
        scored: list[tuple[float, Rule]] = []
        for row in self._children(self._rules, tenant_id, agent_id):
            if not row.enabled or row.embedding is None:
                continue
            if embedding_model is not None and row.embedding_model != embedding_model:
                continue
            if selector is not None and not checks.in_scopes(row, selector):
                continue
            score = score_of(row.embedding)
            if score >= min_score:
                scored.append((score, row))
        scored.sort(key=lambda pair: (-pair[0], pair[1].id))
        return [(copy_of(row), score) for score, row in scored[:limit]]

    async def get_hard_constraints(
        self, tenant_id: UUID, agent_id: UUID, *, scopes: ScopeSelector | None = None
    ) -> list[Rule]:
        selector = checks.checked_scopes(scopes)
        rows = [
            row
            for row in self._children(self._rules, tenant_id, agent_id)
            if row.enabled
            and row.is_hard_constraint
            and (selector is None or checks.in_scopes(row, selector))
        ]
        rows.sort(key=lambda row: (-row.priority, row.created_at, row.id))
        # Shallow copy without the vector first: deep-copying 1536 floats only to drop them is waste.
        return [row.model_copy(update={"embedding": None}).model_copy(deep=True) for row in rows]

    # --- scenarios ----------------------------------------------------------------------------

    async def get_scenario(
        self, tenant_id: UUID, scenario_id: UUID, *, embeddings_of_step: UUID | None = None
    ) -> Scenario | None:
        row = self._live(self._scenarios, tenant_id, scenario_id)
        if row is None:
            return None
        embeddings = self._transition_embeddings[row.id]
        return await assembled_copy(row, embeddings, only_step=embeddings_of_step)

    async def get_scenarios(
        self,
        tenant_id: UUID,
        agent_id: UUID,
        *,
        enabled_only: bool = True,
        include_transition_embeddings: bool = True,
    ) -> list[Scenario]:
        rows = [
            (row, self._transition_embeddings[row.id] if include_transition_embeddings else None)
            for row in _by_name(self._children(self._scenarios, tenant_id, agent_id))
            if row.enabled or not enabled_only
        ]  # taken at once: each assembly below may yield to the loop, and a save may come meanwhile
        return [await assembled_copy(row, embeddings) for row, embeddings in rows]

    async def save_scenario(self, scenario: Scenario, *, expected_revision: int | None = None) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row, embeddings = await prepared_scenario(scenario, self.embedding_dimensions)

        def version_never_decreases() -> None:
            stored = self._scenarios.get(row.id)
            if stored is not None and stored.version > row.version:
                raise revisions.lower_version(row.id, stored.version, row.version)

        def keep_embeddings() -> None:
            self._transition_embeddings[row.id] = embeddings

        return await self._save_child(
            self._scenarios, row, expected, before_write=version_never_decreases, after_write=keep_embeddings
        )

    async def delete_scenario(self, tenant_id: UUID, scenario_id: UUID) -> bool:
        async with self._lock:
            return self._soft_delete(self._scenarios, tenant_id, scenario_id)

    # --- templates ----------------------------------------------------------------------------

    async def get_template(self, tenant_id: UUID, template_id: UUID) -> Template | None:
        row = self._live(self._templates, tenant_id, template_id)
        return copy_of(row) if row else None

    async def get_templates(
        self, tenant_id: UUID, agent_id: UUID, *, scope: Scope | None = None, scope_id: UUID | None = None
    ) -> list[Template]:
        wanted_scope = checks.checked_scope(scope)
        rows = [
            row
            for row in self._children(self._templates, tenant_id, agent_id)
            if (wanted_scope is None or row.scope is wanted_scope)
            and (scope_id is None or row.scope_id == scope_id)
        ]
        return [copy_of(row) for row in _by_name(rows)]

    async def save_template(self, template: Template, *, expected_revision: int | None = None) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        return await self._save_child(self._templates, checks.checked_template(template), expected)

    async def delete_template(self, tenant_id: UUID, template_id: UUID) -> bool:
        async with self._lock:
            return self._soft_delete(self._templates, tenant_id, template_id)

    # --- variables ----------------------------------------------------------------------------

    async def get_variable(self, tenant_id: UUID, variable_id: UUID) -> Variable | None:
        row = self._live(self._variables, tenant_id, variable_id)
        return copy_of(row) if row else None

    async def get_variables(self, tenant_id: UUID, agent_id: UUID) -> list[Variable]:
        return [copy_of(row) for row in _by_name(self._children(self._variables, tenant_id, agent_id))]

    async def get_variable_by_name(self, tenant_id: UUID, agent_id: UUID, name: str) -> Variable | None:
        check_no_nul(name, "name")
        for row in self._children(self._variables, tenant_id, agent_id):
            if row.name == name:
                return copy_of(row)
        return None

    async def save_variable(self, variable: Variable, *, expected_revision: int | None = None) -> UUID:
        expected = revisions.checked_expected_revision(expected_revision)
        row = checks.checked_variable(variable)

        def name_is_free() -> None:
            for other in self._children(self._variables, row.tenant_id, row.agent_id):
                if other.name == row.name and other.id != row.id:
                    raise ConflictError(
                        f"agent {row.agent_id} already has a live variable named {row.name!r}"
                    )

        return await self._save_child(self._variables, row, expected, before_write=name_is_free)

    async def delete_variable(self, tenant_id: UUID, variable_id: UUID) -> bool:
        async with self._lock:
            return self._soft_delete(self._variables, tenant_id, variable_id)

    async def _save_child(
        self,
        table: dict[UUID, _Child],
        row: _Child,
        expected_revision: int | None,
        *,
        before_write: Callable[[], None] | None = None,
        after_write: Callable[[], None] | None = None,
    ) -> UUID:
        async with self._lock:
            self._require_agent(row.tenant_id, row.agent_id)
            self._check_id(table, row, expected_revision)
            if before_write is not None:
                before_write()
            row_id = self._write(table, row)
            if after_write is not None:
                after_write()
            return row_id
