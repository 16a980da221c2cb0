"""Rules, templates and variables of an agent: ``/v1/agents/{agent_id}/{rules|templates|variables}``.

Every route first resolves the agent for the caller's tenant (404 otherwise), and a child is
found only if it belongs to that agent. Updates are PATCH (only the fields sent change). Rules are
re-embedded when their condition or action changes, or when they were embedded by another model.

GET, POST and PATCH return the object's ``revision`` as its ``ETag``; PATCH honours ``If-Match``
and never loses a concurrent change (``focal.api.concurrency``). Ids a body refers to (scope_id,
attached_template_ids) must be the agent's own (``focal.api.references``, 422 otherwise).

Hard constraints and templates are checked against each other when either is written
(``focal.api.constraint_guard``): a template that would break a constraint's patterns, or a
constraint that an existing template (or the safe message) would break, is a 422.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response, status

from focal.alignment.models import Rule, Template, Variable
from focal.api.concurrency import IfMatchHeader, read_modify_write, with_etag
from focal.api.constraint_guard import ConstraintGuard
from focal.api.deps import AgentDep, ServicesDep, no_content_if_deleted, of_agent
from focal.api.embeddings import embed_rule
from focal.api.references import AgentReferences
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


def _guard(services: FocalServices, agent: AgentDep) -> ConstraintGuard:
    return ConstraintGuard(services.config_store, agent, services.settings.turn.constraint_safe_message)


# A rule PATCH that changes none of these leaves the constraint/template pairs as they were.
_CONSTRAINT_FIELDS = (
    "forbid_patterns",
    "require_patterns",
    "enabled",
    "is_hard_constraint",
    "scope",
    "scope_id",
)


def _constraint_changed(new: Rule, old: Rule) -> bool:
    return any(getattr(new, name) != getattr(old, name) for name in _CONSTRAINT_FIELDS)


async def _check_references(
    services: FocalServices, agent: AgentDep, new: Rule | Template, old: Rule | Template | None = None
) -> None:
    """The scope_id (when new or changed) and the attached templates (those added) of a rule or
    template are the agent's own."""
    references = AgentReferences(services.config_store, agent)
    if old is None or (new.scope, new.scope_id) != (old.scope, old.scope_id):
        await references.check_scope(new.scope, new.scope_id)
    if isinstance(new, Rule):
        attached = old.attached_template_ids if isinstance(old, Rule) else []
        added = [i for i in new.attached_template_ids if i not in attached]
        await references.check_templates(added, ["attached_template_ids"])


@router.post("/rules", status_code=status.HTTP_201_CREATED, response_model=RuleOut, tags=["rules"])
async def create_rule(body: RuleCreate, agent: AgentDep, services: ServicesDep, response: Response) -> Rule:
    rule = build_model(Rule, {**body.model_dump(), **_owner(agent)})
    await _check_references(services, agent, rule)
    await _guard(services, agent).check_rule(rule)
    rule = await embed_rule(services.embedding_provider, rule)
    await services.config_store.save_rule(rule)
    return with_etag(response, await _rule(services, agent, rule.id))


@router.get("/rules", response_model=ItemList[RuleOut], tags=["rules"])
async def list_rules(agent: AgentDep, services: ServicesDep, enabled_only: bool = False) -> ItemList[RuleOut]:
    """The agent's live rules, by priority (highest first), then creation time."""
    rules = await services.config_store.get_rules(agent.tenant_id, agent.id, enabled_only=enabled_only)
    return ItemList[RuleOut](items=[RuleOut.model_validate(rule) for rule in rules])


@router.get("/rules/{rule_id}", response_model=RuleOut, tags=["rules"])
async def get_rule(rule_id: UUID, agent: AgentDep, services: ServicesDep, response: Response) -> Rule:
    return with_etag(response, await _rule(services, agent, rule_id))


@router.patch("/rules/{rule_id}", response_model=RuleOut, tags=["rules"])
async def update_rule(
    rule_id: UUID,
    body: RuleUpdate,
    agent: AgentDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> Rule:
    changes = body.model_dump(exclude_unset=True)
    provider = services.embedding_provider

    async def reread() -> Rule:
        return await _rule(services, agent, rule_id)

    async def write(current: Rule) -> None:
        updated = patched(current, changes)
        await _check_references(services, agent, updated, current)
        if _constraint_changed(updated, current):
            await _guard(services, agent).check_rule(updated)
        text_changed = (updated.condition_text, updated.action_text) != (
            current.condition_text,
            current.action_text,
        )
        if text_changed or updated.embedding is None or updated.embedding_model != provider.model_id:
            updated = await embed_rule(provider, updated)
        await services.config_store.save_rule(updated, expected_revision=current.revision)

    await read_modify_write(await reread(), reread, write, if_match=if_match, what=f"rule {rule_id}")
    return with_etag(response, await reread())


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
async def create_template(
    body: TemplateCreate, agent: AgentDep, services: ServicesDep, response: Response
) -> Template:
    template = build_model(Template, {**body.model_dump(), **_owner(agent)})
    await _check_references(services, agent, template)
    await _guard(services, agent).check_template(template)
    await services.config_store.save_template(template)
    return with_etag(response, await _template(services, agent, template.id))


@router.get("/templates", response_model=ItemList[TemplateOut], tags=["templates"])
async def list_templates(agent: AgentDep, services: ServicesDep) -> ItemList[TemplateOut]:
    """The agent's live templates, by name."""
    templates = await services.config_store.get_templates(agent.tenant_id, agent.id)
    return ItemList[TemplateOut](items=[TemplateOut.model_validate(t) for t in templates])


@router.get("/templates/{template_id}", response_model=TemplateOut, tags=["templates"])
async def get_template(
    template_id: UUID, agent: AgentDep, services: ServicesDep, response: Response
) -> Template:
    return with_etag(response, await _template(services, agent, template_id))


@router.patch("/templates/{template_id}", response_model=TemplateOut, tags=["templates"])
async def update_template(
    template_id: UUID,
    body: TemplateUpdate,
    agent: AgentDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> Template:
    changes = body.model_dump(exclude_unset=True)

    async def reread() -> Template:
        return await _template(services, agent, template_id)

    async def write(current: Template) -> None:
        updated = patched(current, changes)
        await _check_references(services, agent, updated, current)
        if (updated.text, updated.scope, updated.scope_id) != (current.text, current.scope, current.scope_id):
            await _guard(services, agent).check_template(updated)
        await services.config_store.save_template(updated, expected_revision=current.revision)

    await read_modify_write(await reread(), reread, write, if_match=if_match, what=f"template {template_id}")
    return with_etag(response, await reread())


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
async def create_variable(
    body: VariableCreate, agent: AgentDep, services: ServicesDep, response: Response
) -> Variable:
    variable = build_model(Variable, {**body.model_dump(), **_owner(agent)})
    await services.config_store.save_variable(variable)
    return with_etag(response, await _variable(services, agent, variable.id))


@router.get("/variables", response_model=ItemList[VariableOut], tags=["variables"])
async def list_variables(agent: AgentDep, services: ServicesDep) -> ItemList[VariableOut]:
    """The agent's live variables, by name."""
    variables = await services.config_store.get_variables(agent.tenant_id, agent.id)
    return ItemList[VariableOut](items=[VariableOut.model_validate(v) for v in variables])


@router.get("/variables/{variable_id}", response_model=VariableOut, tags=["variables"])
async def get_variable(
    variable_id: UUID, agent: AgentDep, services: ServicesDep, response: Response
) -> Variable:
    return with_etag(response, await _variable(services, agent, variable_id))


@router.patch("/variables/{variable_id}", response_model=VariableOut, tags=["variables"])
async def update_variable(
    variable_id: UUID,
    body: VariableUpdate,
    agent: AgentDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> Variable:
    changes = body.model_dump(exclude_unset=True)

    async def reread() -> Variable:
        return await _variable(services, agent, variable_id)

    async def write(current: Variable) -> None:
        await services.config_store.save_variable(
            patched(current, changes), expected_revision=current.revision
        )

    await read_modify_write(await reread(), reread, write, if_match=if_match, what=f"variable {variable_id}")
    return with_etag(response, await reread())


@router.delete("/variables/{variable_id}", status_code=_NO_CONTENT, tags=["variables"])
async def delete_variable(variable_id: UUID, agent: AgentDep, services: ServicesDep) -> Response:
    await _variable(services, agent, variable_id)
    deleted = await services.config_store.delete_variable(agent.tenant_id, variable_id)
    return no_content_if_deleted(deleted, "variable", variable_id)
