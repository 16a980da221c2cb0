"""The ConfigStore interface: agents and everything that defines their behaviour.

Rules every backend follows (proven by ``tests/contract/test_config_store.py``):

- every call filters on ``tenant_id``; another tenant's row reads as ``None``, deletes as
  ``False`` and updates as ``NotFoundError`` (an upsert whose id belongs to another tenant is a
  ``ConflictError``);
- returned objects are copies; ``save_*`` sets ``updated_at``;
- agents, rules, scenarios, templates and variables are soft-deleted (``deleted_at``) and never
  appear again in reads, lists or searches; tool activations and migration plans are hard-deleted;
- live agent names are unique per tenant and live variable names unique per agent
  (``ConflictError``); a tool is activated at most once per agent (saving the same
  ``(agent_id, tool_id)`` again updates the existing activation);
- ``save_*`` is an upsert by id. Saving an id that belongs to another tenant is a ``ConflictError``;
  saving an id whose row was soft-deleted is a ``NotFoundError`` (deleted stays deleted; only
  ``delete_*`` sets ``deleted_at``, and ``save_*`` never clears it). ``created_at`` of an existing
  row is kept;
- rules, scenarios, templates, variables and tool activations name an agent that must exist in
  the same tenant (``NotFoundError`` otherwise); deleting an agent soft-deletes its rules,
  scenarios, templates and variables and removes its tool activations;
- embeddings must have ``embedding_dimensions`` floats (``InvalidDataError`` otherwise);
- ``limit`` is 1..1000 and ``offset`` >= 0 (``InvalidDataError`` otherwise).

Tool definitions belong to the tenant (not to an agent): keyed by their ``name`` for reads and
deletes, unique among the tenant's live definitions, soft-deleted, revisioned like the rest.

Revisions (optimistic concurrency) of agents, rules, scenarios, templates, variables, tool
definitions and tool activations:

- the store keeps ``revision``: 1 when a row is created, +1 on every save; the value carried by
  the saved model is ignored;
- ``save_*(model, expected_revision=n)`` is a conditional update, atomic with the write: it
  writes only if a live row with this id (tool activations: this agent and tool id) exists for
  the model's tenant (``NotFoundError`` otherwise, including another tenant's id) and its stored
  revision is ``n`` (``StaleRevisionError``, a ``ConflictError``, otherwise; nothing is written).
  Of concurrent saves expecting the same revision, exactly one wins;
- ``expected_revision=None`` (the default) is the unconditional upsert described above, for
  internal callers that own the row (the API always passes the revision it read);
- a scenario's ``version`` never decreases: a save (conditional or not) of a version lower than
  the stored one is a ``ConflictError`` and writes nothing.

Scenarios: a save is refused (``InvalidDataError``) when the scenario exceeds
``SCENARIO_LIMITS`` (``scenario_limit_errors``). Transition embeddings are stored in binary
(``scenario_codec``) and come back as float32 values, like every stored vector; loading a
scenario yields to the event loop between slices of decoding work.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from uuid import UUID

from focal.alignment.models import (
    Agent,
    MigrationPlan,
    MigrationPlanStatus,
    Rule,
    Scenario,
    Scope,
    Template,
    ToolActivation,
    ToolDefinition,
    Variable,
)

# (scope, scope_id) pairs admitted by a rule search, e.g. [(Scope.GLOBAL, None), (Scope.STEP, step_id)].
ScopeSelector = Sequence[tuple[Scope, UUID | None]]


class ConfigStore(ABC):
    """Agents, rules, scenarios, templates, variables, tool activations and migration plans."""

    # --- agents: get_agents orders by created_at desc, then id --------------------------------

    @abstractmethod
    async def get_agent(self, tenant_id: UUID, agent_id: UUID) -> Agent | None: ...

    @abstractmethod
    async def get_agents(
        self, tenant_id: UUID, *, enabled_only: bool = False, limit: int = 20, offset: int = 0
    ) -> tuple[list[Agent], int]:
        """A page of live agents (created_at desc, id) and the total count of live agents that
        match ``enabled_only``."""

    @abstractmethod
    async def save_agent(self, agent: Agent, *, expected_revision: int | None = None) -> UUID: ...

    @abstractmethod
    async def delete_agent(self, tenant_id: UUID, agent_id: UUID) -> bool:
        """Soft-delete the agent. Returns False when there is no live agent with this id."""

    # --- rules: get_rules orders by priority desc, created_at asc, id -------------------------

    @abstractmethod
    async def get_rule(self, tenant_id: UUID, rule_id: UUID) -> Rule | None: ...

    @abstractmethod
    async def get_rules(
        self,
        tenant_id: UUID,
        agent_id: UUID,
        *,
        scope: Scope | None = None,
        scope_id: UUID | None = None,
        enabled_only: bool = True,
    ) -> list[Rule]: ...

    @abstractmethod
    async def save_rule(self, rule: Rule, *, expected_revision: int | None = None) -> UUID: ...

    @abstractmethod
    async def delete_rule(self, tenant_id: UUID, rule_id: UUID) -> bool: ...

    @abstractmethod
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
        """Enabled live rules with an embedding, by cosine similarity desc (ties on id).

        ``scopes`` admits rules whose (scope, scope_id) is in the list; a pair with ``None`` as
        scope_id admits every rule of that scope. ``None`` admits every scope.
        """

    @abstractmethod
    async def get_hard_constraints(
        self, tenant_id: UUID, agent_id: UUID, *, scopes: ScopeSelector | None = None
    ) -> list[Rule]:
        """The agent's enabled live hard constraints (``is_hard_constraint``) in ``scopes``
        (admitted as by ``vector_search_rules``), by priority desc, created_at, id.

        Read on every turn (a constraint applies whether it matched or not), so the rules come
        back without their embedding (``embedding`` is None; ``embedding_model`` is kept).
        """

    # --- scenarios: get_scenarios orders by name asc, id --------------------------------------

    @abstractmethod
    async def get_scenario(
        self, tenant_id: UUID, scenario_id: UUID, *, embeddings_of_step: UUID | None = None
    ) -> Scenario | None:
        """The live scenario. With ``embeddings_of_step``, only that step's transitions carry
        their ``condition_embedding`` (the others are left empty, undecoded): all a turn needs
        to follow a transition from the current step, at a cost independent of the scenario's
        size."""

    @abstractmethod
    async def get_scenarios(
        self,
        tenant_id: UUID,
        agent_id: UUID,
        *,
        enabled_only: bool = True,
        include_transition_embeddings: bool = True,
    ) -> list[Scenario]:
        """The agent's live scenarios. ``include_transition_embeddings=False`` leaves every
        transition's ``condition_embedding`` empty and skips decoding them: for callers that
        need only entry conditions, steps and ids (e.g. choosing a scenario to enter)."""

    @abstractmethod
    async def save_scenario(self, scenario: Scenario, *, expected_revision: int | None = None) -> UUID:
        """Upsert ``scenario``; its ``version`` may stay or grow, never decrease (ConflictError)."""

    @abstractmethod
    async def delete_scenario(self, tenant_id: UUID, scenario_id: UUID) -> bool: ...

    # --- templates: get_templates orders by name asc, id --------------------------------------

    @abstractmethod
    async def get_template(self, tenant_id: UUID, template_id: UUID) -> Template | None: ...

    @abstractmethod
    async def get_templates(
        self, tenant_id: UUID, agent_id: UUID, *, scope: Scope | None = None, scope_id: UUID | None = None
    ) -> list[Template]: ...

    @abstractmethod
    async def save_template(self, template: Template, *, expected_revision: int | None = None) -> UUID: ...

    @abstractmethod
    async def delete_template(self, tenant_id: UUID, template_id: UUID) -> bool: ...

    # --- variables: get_variables orders by name asc ------------------------------------------

    @abstractmethod
    async def get_variable(self, tenant_id: UUID, variable_id: UUID) -> Variable | None: ...

    @abstractmethod
    async def get_variables(self, tenant_id: UUID, agent_id: UUID) -> list[Variable]: ...

    @abstractmethod
    async def get_variable_by_name(self, tenant_id: UUID, agent_id: UUID, name: str) -> Variable | None: ...

    @abstractmethod
    async def save_variable(self, variable: Variable, *, expected_revision: int | None = None) -> UUID: ...

    @abstractmethod
    async def delete_variable(self, tenant_id: UUID, variable_id: UUID) -> bool: ...

    # --- tool activations (hard delete): get_tool_activations orders by tool_id asc -----------

    @abstractmethod
    async def get_tool_activation(
        self, tenant_id: UUID, agent_id: UUID, tool_id: str
    ) -> ToolActivation | None: ...

    @abstractmethod
    async def get_tool_activations(self, tenant_id: UUID, agent_id: UUID) -> list[ToolActivation]: ...

    @abstractmethod
    async def save_tool_activation(
        self, activation: ToolActivation, *, expected_revision: int | None = None
    ) -> UUID:
        """Insert, or update the activation of the same (agent_id, tool_id); returns its id.

        With ``expected_revision`` the activation of (agent_id, tool_id) must exist with that
        revision; its id is kept whatever ``activation.id`` says."""

    @abstractmethod
    async def delete_tool_activation(self, tenant_id: UUID, agent_id: UUID, tool_id: str) -> bool: ...

    # --- tool definitions (tenant-wide, soft delete): get_tool_definitions orders by name ----

    @abstractmethod
    async def get_tool_definition(self, tenant_id: UUID, name: str) -> ToolDefinition | None:
        """The tenant's live definition of this name (its ``secret`` included: callers that show
        it to anyone must leave it out)."""

    @abstractmethod
    async def get_tool_definitions(
        self, tenant_id: UUID, *, names: Sequence[str] | None = None
    ) -> list[ToolDefinition]:
        """The tenant's live definitions, by name; with ``names``, only those (unknown names are
        skipped)."""

    @abstractmethod
    async def save_tool_definition(
        self, definition: ToolDefinition, *, expected_revision: int | None = None
    ) -> UUID:
        """Upsert by id. Live names are unique per tenant (``ConflictError``); a definition's
        name never changes (``ConflictError`` for a save that renames a stored one)."""

    @abstractmethod
    async def delete_tool_definition(self, tenant_id: UUID, name: str) -> bool:
        """Soft-delete the live definition of this name. Activations that name it stay (they are
        the agents' configuration) but no turn offers or runs a tool without a live definition."""

    # --- migration plans (hard delete): list orders by created_at desc, id --------------------

    @abstractmethod
    async def get_migration_plan(self, tenant_id: UUID, plan_id: UUID) -> MigrationPlan | None: ...

    @abstractmethod
    async def get_migration_plan_for_versions(
        self, tenant_id: UUID, scenario_id: UUID, from_version: int, to_version: int
    ) -> MigrationPlan | None: ...

    @abstractmethod
    async def save_migration_plan(self, plan: MigrationPlan) -> UUID: ...

    @abstractmethod
    async def list_migration_plans(
        self,
        tenant_id: UUID,
        *,
        scenario_id: UUID | None = None,
        status: MigrationPlanStatus | None = None,
        limit: int = 50,
    ) -> list[MigrationPlan]: ...

    @abstractmethod
    async def delete_migration_plan(self, tenant_id: UUID, plan_id: UUID) -> bool: ...

    # --- scenario archives: immutable snapshots of past versions ------------------------------

    @abstractmethod
    async def archive_scenario_version(self, tenant_id: UUID, scenario: Scenario) -> None:
        """Keep a snapshot of ``scenario`` at its version. Archiving the same version twice is a
        ConflictError; the scenario must belong to ``tenant_id`` (InvalidDataError otherwise)."""

    @abstractmethod
    async def get_archived_scenario(
        self, tenant_id: UUID, scenario_id: UUID, version: int
    ) -> Scenario | None: ...
