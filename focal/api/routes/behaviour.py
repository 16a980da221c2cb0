"""Rules, templates and variables of an agent: ``/v1/agents/{agent_id}/{rules|templates|variables}``.

Every route first resolves the agent for the caller's tenant (404 otherwise), and a child is
found only if it belongs to that agent. Updates are PATCH (only the fields sent change). Rules are
re-embedded when their condition or action changes, or when they were embedded by another model.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response, status

from focal.alignment.models import Rule, Template, Variable
from focal.api.deps import AgentDep, ServicesDep, no_content_if_deleted, of_agent
from focal.api.embeddings import embed_rule
from focal.api.schemas.behaviour import (
    RuleCreate,
    RuleOut,
    RuleUpdate,
    TemplateCreate,
    TemplateOut,
    TemplateUpdate,
    VariableCreate,
    VariableOut,
    VariableUpdate,
)
from focal.api.schemas.common import ItemList
from focal.api.validation import build_model, patched
from focal.bootstrap import FocalServices

router = APIRouter(prefix="/v1/agents/{agent_id}", tags=["agent configuration"])

_NO_CONTENT = status.HTTP_204_NO_CONTENT


def _owner(agent: AgentDep) -> dict[str, UUID]:
    return {"tenant_id": agent.tenant_id, "agent_id": agent.id}


# --- rules ------------------------------------------------------------------------------------


async def _rule(services: FocalServices, agent: AgentDep, rule_id: UUID) -> Rule:
    rule = await services.config_store.get_rule(agent.tenant_id, rule_id)
    return of_agent(rule, agent, "rule", rule_id)


@router.post("/rules", status_code=status.HTTP_201_CREATED, response_model=RuleOut, tags=["rules"])
async def create_rule(body: RuleCreate, agent: AgentDep, services: ServicesDep) -> Rule:
    rule = build_model(Rule, {**body.model_dump(), **_owner(agent)})
    rule = await embed_rule(services.embedding_provider, rule)
    await services.config_store.save_rule(rule)
    return await _rule(services, agent, rule.id)


@router.get("/rules", response_model=ItemList[RuleOut], tags=["rules"])
async def list_rules(agent: AgentDep, services: ServicesDep, enabled_only: bool = False) -> ItemList[RuleOut]:
    """The agent's live rules, by priority (highest first), then creation time."""
    rules = await services.config_store.get_rules(agent.tenant_id, agent.id, enabled_only=enabled_only)
    return ItemList[RuleOut](items=[RuleOut.model_validate(rule) for rule in rules])


@router.get("/rules/{rule_id}", response_model=RuleOut, tags=["rules"])
async def get_rule(rule_id: UUID, agent: AgentDep, services: ServicesDep) -> Rule:
    return await _rule(services, agent, rule_id)


@router.patch("/rules/{rule_id}", response_model=RuleOut, tags=["rules"])
async def update_rule(rule_id: UUID, body: RuleUpdate, agent: AgentDep, services: ServicesDep) -> Rule:
    current = await _rule(services, agent, rule_id)
    updated = patched(current, body.model_dump(exclude_unset=True))
    provider = services.embedding_provider
    text_changed = (updated.condition_text, updated.action_text) != (
        current.condition_text,
        current.action_text,
    )
    if text_changed or updated.embedding is None or updated.embedding_model != provider.model_id:
        updated = await embed_rule(provider, updated)
    await services.config_store.save_rule(updated)
    return await _rule(services, agent, rule_id)


@router.delete("/rules/{rule_id}", status_code=_NO_CONTENT, tags=["rules"])
async def delete_rule(rule_id: UUID, agent: AgentDep, services: ServicesDep) -> Response:
    await _rule(services, agent, rule_id)
    deleted = await services.config_store.delete_rule(agent.tenant_id, rule_id)
    return no_content_if_deleted(deleted, "rule", rule_id)


# --- templates --------------------------------------------------------------------------------


async def _template(services: FocalServices, agent: AgentDep, template_id: UUID) -> Template:
    template = await services.config_store.get_template(agent.tenant_id, template_id)
    return of_agent(template, agent, "template", template_id)


@router.post(
    "/templates", status_code=status.HTTP_201_CREATED, response_model=TemplateOut, tags=["templates"]
)
async def create_template(body: TemplateCreate, agent: AgentDep, services: ServicesDep) -> Template:
    template = build_model(Template, {**body.model_dump(), **_owner(agent)})
    await services.config_store.save_template(template)
    return await _template(services, agent, template.id)


@router.get("/templates", response_model=ItemList[TemplateOut], tags=["templates"])
async def list_templates(agent: AgentDep, services: ServicesDep) -> ItemList[TemplateOut]:
    """The agent's live templates, by name."""
    templates = await services.config_store.get_templates(agent.tenant_id, agent.id)
    return ItemList[TemplateOut](items=[TemplateOut.model_validate(t) for t in templates])


@router.get("/templates/{template_id}", response_model=TemplateOut, tags=["templates"])
async def get_template(template_id: UUID, agent: AgentDep, services: ServicesDep) -> Template:
    return await _template(services, agent, template_id)


@router.patch("/templates/{template_id}", response_model=TemplateOut, tags=["templates"])
async def update_template(
    template_id: UUID, body: TemplateUpdate, agent: AgentDep, services: ServicesDep
) -> Template:
    current = await _template(services, agent, template_id)
    await services.config_store.save_template(patched(current, body.model_dump(exclude_unset=True)))
    return await _template(services, agent, template_id)


@router.delete("/templates/{template_id}", status_code=_NO_CONTENT, tags=["templates"])
async def delete_template(template_id: UUID, agent: AgentDep, services: ServicesDep) -> Response:
    await _template(services, agent, template_id)
    deleted = await services.config_store.delete_template(agent.tenant_id, template_id)
    return no_content_if_deleted(deleted, "template", template_id)


# --- variables --------------------------------------------------------------------------------


async def _variable(services: FocalServices, agent: AgentDep, variable_id: UUID) -> Variable:
    variable = await services.config_store.get_variable(agent.tenant_id, variable_id)
    return of_agent(variable, agent, "variable", variable_id)


@router.post(
    "/variables", status_code=status.HTTP_201_CREATED, response_model=VariableOut, tags=["variables"]
)
async def create_variable(body: VariableCreate, agent: AgentDep, services: ServicesDep) -> Variable:
    variable = build_model(Variable, {**body.model_dump(), **_owner(agent)})
    await services.config_store.save_variable(variable)
    return await _variable(services, agent, variable.id)


@router.get("/variables", response_model=ItemList[VariableOut], tags=["variables"])
async def list_variables(agent: AgentDep, services: ServicesDep) -> ItemList[VariableOut]:
    """The agent's live variables, by name."""
    variables = await services.config_store.get_variables(agent.tenant_id, agent.id)
    return ItemList[VariableOut](items=[VariableOut.model_validate(v) for v in variables])


@router.get("/variables/{variable_id}", response_model=VariableOut, tags=["variables"])
async def get_variable(variable_id: UUID, agent: AgentDep, services: ServicesDep) -> Variable:
    return await _variable(services, agent, variable_id)


@router.patch("/variables/{variable_id}", response_model=VariableOut, tags=["variables"])
async def update_variable(
    variable_id: UUID, body: VariableUpdate, agent: AgentDep, services: ServicesDep
) -> Variable:
    current = await _variable(services, agent, variable_id)
    await services.config_store.save_variable(patched(current, body.model_dump(exclude_unset=True)))
    return await _variable(services, agent, variable_id)


@router.delete("/variables/{variable_id}", status_code=_NO_CONTENT, tags=["variables"])
async def delete_variable(variable_id: UUID, agent: AgentDep, services: ServicesDep) -> Response:
    await _variable(services, agent, variable_id)
    deleted = await services.config_store.delete_variable(agent.tenant_id, variable_id)
    return no_content_if_deleted(deleted, "variable", variable_id)
