"""``/v1/agents``: create, list (paged), get, update (PATCH), delete (soft, with its children).

GET, POST and PATCH return the agent's ``revision`` as its ``ETag``; PATCH honours ``If-Match``
and never loses a concurrent change (``focal.api.concurrency``).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response, status

from focal.alignment.models import Agent
from focal.api.concurrency import IfMatchHeader, read_modify_write, with_etag
from focal.api.deps import AgentDep, ServicesDep, TenantDep
from focal.api.schemas.agents import AgentCreate, AgentOut, AgentUpdate
from focal.api.schemas.common import Page
from focal.api.validation import build_model, patched
from focal.bootstrap import FocalServices
from focal.errors import NotFoundError

router = APIRouter(prefix="/v1/agents", tags=["agents"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AgentOut)
async def create_agent(
    body: AgentCreate, tenant_id: TenantDep, services: ServicesDep, response: Response
) -> Agent:
    agent = build_model(Agent, {**body.model_dump(), "tenant_id": tenant_id})
    await services.config_store.save_agent(agent)
    return with_etag(response, await _reload(services, tenant_id, agent.id))


@router.get("", response_model=Page[AgentOut])
async def list_agents(
    tenant_id: TenantDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    enabled_only: bool = False,
) -> Page[AgentOut]:
    agents, total = await services.config_store.get_agents(
        tenant_id, enabled_only=enabled_only, limit=limit, offset=offset
    )
    items = [AgentOut.model_validate(agent) for agent in agents]
    return Page[AgentOut](items=items, total=total, limit=limit, offset=offset)


@router.get("/{agent_id}", response_model=AgentOut)
async def get_agent(agent: AgentDep, response: Response) -> Agent:
    return with_etag(response, agent)


@router.patch("/{agent_id}", response_model=AgentOut)
async def update_agent(
    body: AgentUpdate,
    agent: AgentDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> Agent:
    changes = body.model_dump(exclude_unset=True)

    async def reread() -> Agent:
        return await _reload(services, agent.tenant_id, agent.id)

    async def write(current: Agent) -> None:
        await services.config_store.save_agent(patched(current, changes), expected_revision=current.revision)

    await read_modify_write(agent, reread, write, if_match=if_match, what=f"agent {agent.id}")
    return with_etag(response, await reread())


async def _reload(services: FocalServices, tenant_id: UUID, agent_id: UUID) -> Agent:
    """The stored copy (the store sets timestamps); gone only if deleted concurrently."""
    agent = await services.config_store.get_agent(tenant_id, agent_id)
    if agent is None:
        raise NotFoundError(f"agent {agent_id} not found")
    return agent


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_agent(agent_id: UUID, tenant_id: TenantDep, services: ServicesDep) -> Response:
    """Soft-deletes the agent and its rules, scenarios, templates and variables."""
    if not await services.config_store.delete_agent(tenant_id, agent_id):
        raise NotFoundError(f"agent {agent_id} not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
