"""Ids that config bodies refer to must be the agent's own: 422 otherwise.

Checked when a body sets them (creation, or a PATCH that changes them):

- a rule's or template's ``scope_id``: a live scenario of the agent (scope SCENARIO) or a step
  of one (scope STEP);
- a rule's ``attached_template_ids``: live templates of the agent;
- a scenario step's ``rule_ids`` and ``template_ids``: live rules and templates of the agent.

Another agent's or tenant's id reads exactly like an unknown one (no existence leaks across
tenants). A PATCH checks only ids it adds: a reference that was valid when it was set and whose
target was deleted since does not block unrelated edits. The check is not atomic with the save
(a target deleted at that moment leaves a dangling id, which the turn pipeline ignores).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from uuid import UUID

from fastapi.exceptions import RequestValidationError

from focal.alignment.models import Agent, Scope
from focal.alignment.stores.config_store import ConfigStore

__all__ = ["AgentReferences"]


def _invalid(location: Sequence[str | int], message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "invalid_reference", "loc": ("body", *location), "msg": message, "input": None}]
    )


class AgentReferences:
    """Checks ids against one agent's live rules, templates and scenarios, each list read at
    most once (a scenario body may refer to ids in a hundred steps)."""

    def __init__(self, store: ConfigStore, agent: Agent) -> None:
        self._store = store
        self._agent = agent
        self._rule_ids: set[UUID] | None = None
        self._template_ids: set[UUID] | None = None

    async def check_rules(self, ids: Iterable[UUID], location: Sequence[str | int]) -> None:
        wanted = list(ids)
        if wanted:
            if self._rule_ids is None:
                rules = await self._store.get_rules(self._agent.tenant_id, self._agent.id, enabled_only=False)
                self._rule_ids = {rule.id for rule in rules}
            self._require(wanted, self._rule_ids, location, "rules")

    async def check_templates(self, ids: Iterable[UUID], location: Sequence[str | int]) -> None:
        wanted = list(ids)
        if wanted:
            if self._template_ids is None:
                templates = await self._store.get_templates(self._agent.tenant_id, self._agent.id)
                self._template_ids = {template.id for template in templates}
            self._require(wanted, self._template_ids, location, "templates")

    async def check_scope(self, scope: Scope, scope_id: UUID | None) -> None:
        """For SCENARIO and STEP scopes: ``scope_id`` names a scenario, or a step of a scenario,
        of the agent (the model already requires it to be set, and empty for GLOBAL)."""
        if scope is Scope.GLOBAL or scope_id is None:
            return
        scenarios = await self._store.get_scenarios(
            self._agent.tenant_id, self._agent.id, enabled_only=False, include_transition_embeddings=False
        )
        if scope is Scope.SCENARIO:
            known, kind = {scenario.id for scenario in scenarios}, "a scenario"
        else:
            known, kind = (
                {step.id for scenario in scenarios for step in scenario.steps},
                "a step of a scenario",
            )
        if scope_id not in known:
            raise _invalid(("scope_id",), f"{scope_id} is not {kind} of agent {self._agent.id}")

    def _require(
        self, wanted: list[UUID], known: set[UUID], location: Sequence[str | int], kind: str
    ) -> None:
        unknown = list(dict.fromkeys(i for i in wanted if i not in known))
        if unknown:
            listed = ", ".join(map(str, unknown))
            raise _invalid(location, f"not {kind} of agent {self._agent.id}: {listed}")
