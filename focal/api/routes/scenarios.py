"""Scenarios of an agent: ``/v1/agents/{agent_id}/scenarios``.

Creating or editing a scenario embeds its entry condition and every transition condition.
Editing what defines the flow (steps, entry step, entry condition) makes a new version: the
previous one is archived first, so sessions still on it can be resolved and migrated.

GET, POST and PATCH return the scenario's ``revision`` as its ``ETag``; PATCH honours
``If-Match`` and never loses a concurrent change (``focal.api.concurrency``): the version bump
of a flow change is written on condition of the revision it was computed from, so a concurrent
edit can neither undo new steps nor take the version back. Steps may refer only to the agent's
own rules and templates (``focal.api.references``).
"""

from __future__ import annotations

import contextlib
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response, status

from focal.alignment.models import Scenario
from focal.api.concurrency import IfMatchHeader, read_modify_write, with_etag
from focal.api.deps import AgentDep, ServicesDep, no_content_if_deleted, of_agent
from focal.api.embeddings import embed_scenario
from focal.api.references import AgentReferences
from focal.api.schemas.common import ItemList
from focal.api.schemas.scenarios import ScenarioCreate, ScenarioOut, ScenarioUpdate
from focal.api.validation import build_model
from focal.bootstrap import FocalServices
from focal.errors import ConflictError
from focal.models import utc_now

router = APIRouter(prefix="/v1/agents/{agent_id}/scenarios", tags=["scenarios"])

_FLOW_FIELDS = frozenset({"steps", "entry_step_id", "entry_condition_text"})
# A scenario as compared for flow changes: without embeddings (derived, and megabytes of floats).
_WITHOUT_EMBEDDINGS: dict[str, Any] = {
    "steps": {"__all__": {"transitions": {"__all__": {"condition_embedding"}}}}
}


async def _scenario(services: FocalServices, agent: AgentDep, scenario_id: UUID) -> Scenario:
    scenario = await services.config_store.get_scenario(agent.tenant_id, scenario_id)
    return of_agent(scenario, agent, "scenario", scenario_id)


async def _check_step_references(
    services: FocalServices, agent: AgentDep, steps: list[dict[str, Any]], known: Scenario | None = None
) -> None:
    """Rule and template ids of ``steps`` (request dicts) are the agent's; ids the scenario
    ``known`` already refers to are not checked again."""
    old_rules = {i for step in known.steps for i in step.rule_ids} if known else set()
    old_templates = {i for step in known.steps for i in step.template_ids} if known else set()
    references = AgentReferences(services.config_store, agent)
    for position, step in enumerate(steps):
        location: list[str | int] = ["steps", position]
        added_rules = [i for i in step["rule_ids"] if i not in old_rules]
        await references.check_rules(added_rules, [*location, "rule_ids"])
        added_templates = [i for i in step["template_ids"] if i not in old_templates]
        await references.check_templates(added_templates, [*location, "template_ids"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ScenarioOut)
async def create_scenario(
    body: ScenarioCreate, agent: AgentDep, services: ServicesDep, response: Response
) -> Scenario:
    fields = body.model_dump()
    await _check_step_references(services, agent, fields["steps"])
    scenario = build_model(Scenario, {**fields, "tenant_id": agent.tenant_id, "agent_id": agent.id})
    scenario = await embed_scenario(services.embedding_provider, scenario)
    await services.config_store.save_scenario(scenario)
    return with_etag(response, await _scenario(services, agent, scenario.id))


@router.get("", response_model=ItemList[ScenarioOut])
async def list_scenarios(
    agent: AgentDep, services: ServicesDep, enabled_only: bool = False
) -> ItemList[ScenarioOut]:
    """The agent's live scenarios, by name."""
    scenarios = await services.config_store.get_scenarios(
        agent.tenant_id, agent.id, enabled_only=enabled_only, include_transition_embeddings=False
    )
    return ItemList[ScenarioOut](items=[ScenarioOut.model_validate(s) for s in scenarios])


@router.get("/{scenario_id}", response_model=ScenarioOut)
async def get_scenario(
    scenario_id: UUID, agent: AgentDep, services: ServicesDep, response: Response
) -> Scenario:
    return with_etag(response, await _scenario(services, agent, scenario_id))


@router.patch("/{scenario_id}", response_model=ScenarioOut)
async def update_scenario(
    scenario_id: UUID,
    body: ScenarioUpdate,
    agent: AgentDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> Scenario:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    if "steps" in changes:  # whole steps, defaults included: they replace the current ones
        changes["steps"] = body.model_dump(include={"steps"})["steps"]
    store, provider = services.config_store, services.embedding_provider

    async def reread() -> Scenario:
        return await _scenario(services, agent, scenario_id)

    async def write(current: Scenario) -> None:
        flow_changed = _flow_changes(current, changes)
        updated = _patched(current, changes, version=current.version + 1 if flow_changed else current.version)
        if flow_changed or current.embedding_model != provider.model_id:
            updated = await embed_scenario(provider, updated)
        if flow_changed:
            # Archived already (ConflictError): by an earlier attempt, or a concurrent edit of
            # this same version. Either way the snapshot of this version exists.
            with contextlib.suppress(ConflictError):
                await store.archive_scenario_version(agent.tenant_id, current)
        await store.save_scenario(updated, expected_revision=current.revision)

    current = await reread()
    if "steps" in changes:
        await _check_step_references(services, agent, changes["steps"], current)
    await read_modify_write(current, reread, write, if_match=if_match, what=f"scenario {scenario_id}")
    return with_etag(response, await reread())


def _flow_changes(current: Scenario, changes: dict[str, Any]) -> bool:
    """Whether ``changes`` (a PATCH body's fields) change the flow of ``current``."""
    fields = _FLOW_FIELDS & changes.keys()
    if not fields:
        return False
    before = current.model_dump(include=set(fields), exclude=_WITHOUT_EMBEDDINGS)
    return any(before[field] != changes[field] for field in fields)


def _patched(current: Scenario, changes: dict[str, Any], *, version: int) -> Scenario:
    """``current`` with ``changes`` applied (422 if the result is invalid). Unchanged steps are
    reused as they are (with their embeddings) rather than dumped and validated again."""
    data = current.model_dump(exclude={"steps"})
    data.update({field: value for field, value in changes.items() if field != "steps"})
    data.update(version=version, updated_at=utc_now())
    return build_model(Scenario, {**data, "steps": changes.get("steps", current.steps)})


@router.delete("/{scenario_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_scenario(scenario_id: UUID, agent: AgentDep, services: ServicesDep) -> Response:
    await _scenario(services, agent, scenario_id)
    deleted = await services.config_store.delete_scenario(agent.tenant_id, scenario_id)
    return no_content_if_deleted(deleted, "scenario", scenario_id)
