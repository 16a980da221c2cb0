"""Scenarios of an agent: ``/v1/agents/{agent_id}/scenarios``.

Creating or editing a scenario embeds its entry condition and every transition condition.
Editing what defines the flow (steps, entry step, entry condition) makes a new version: the
previous one is archived first, so sessions still on it can be resolved and migrated.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response, status

from focal.alignment.models import Scenario
from focal.api.deps import AgentDep, ServicesDep, no_content_if_deleted, of_agent
from focal.api.embeddings import embed_scenario
from focal.api.schemas.common import ItemList
from focal.api.schemas.scenarios import ScenarioCreate, ScenarioOut, ScenarioUpdate
from focal.api.validation import build_model, patched
from focal.bootstrap import FocalServices

router = APIRouter(prefix="/v1/agents/{agent_id}/scenarios", tags=["scenarios"])

_FLOW_FIELDS = frozenset({"steps", "entry_step_id", "entry_condition_text"})


async def _scenario(services: FocalServices, agent: AgentDep, scenario_id: UUID) -> Scenario:
    scenario = await services.config_store.get_scenario(agent.tenant_id, scenario_id)
    return of_agent(scenario, agent, "scenario", scenario_id)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ScenarioOut)
async def create_scenario(body: ScenarioCreate, agent: AgentDep, services: ServicesDep) -> Scenario:
    scenario = build_model(
        Scenario, {**body.model_dump(), "tenant_id": agent.tenant_id, "agent_id": agent.id}
    )
    scenario = await embed_scenario(services.embedding_provider, scenario)
    await services.config_store.save_scenario(scenario)
    return await _scenario(services, agent, scenario.id)


@router.get("", response_model=ItemList[ScenarioOut])
async def list_scenarios(
    agent: AgentDep, services: ServicesDep, enabled_only: bool = False
) -> ItemList[ScenarioOut]:
    """The agent's live scenarios, by name."""
    scenarios = await services.config_store.get_scenarios(
        agent.tenant_id, agent.id, enabled_only=enabled_only
    )
    return ItemList[ScenarioOut](items=[ScenarioOut.model_validate(s) for s in scenarios])


@router.get("/{scenario_id}", response_model=ScenarioOut)
async def get_scenario(scenario_id: UUID, agent: AgentDep, services: ServicesDep) -> Scenario:
    return await _scenario(services, agent, scenario_id)


@router.patch("/{scenario_id}", response_model=ScenarioOut)
async def update_scenario(
    scenario_id: UUID, body: ScenarioUpdate, agent: AgentDep, services: ServicesDep
) -> Scenario:
    current = await _scenario(services, agent, scenario_id)
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    flow_changed = any(
        field in changes and _plain(changes[field]) != _plain(getattr(current, field))
        for field in _FLOW_FIELDS
    )
    if flow_changed:
        changes["version"] = current.version + 1
    updated = patched(current, changes)
    provider = services.embedding_provider
    if flow_changed or current.embedding_model != provider.model_id:
        updated = await embed_scenario(provider, updated)
    store = services.config_store
    if (
        flow_changed
        and await store.get_archived_scenario(agent.tenant_id, current.id, current.version) is None
    ):
        # Idempotent: a save that failed after archiving must not block the next attempt.
        await store.archive_scenario_version(agent.tenant_id, current)
    await store.save_scenario(updated)
    return await _scenario(services, agent, scenario_id)


def _plain(value: Any) -> Any:
    """Comparable form of a field: steps without their (derived) embeddings."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "condition_embedding"}
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump())
    return value


@router.delete("/{scenario_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_scenario(scenario_id: UUID, agent: AgentDep, services: ServicesDep) -> Response:
    await _scenario(services, agent, scenario_id)
    deleted = await services.config_store.delete_scenario(agent.tenant_id, scenario_id)
    return no_content_if_deleted(deleted, "scenario", scenario_id)
