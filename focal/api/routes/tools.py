"""Tool activations of an agent: ``/v1/agents/{agent_id}/tools/{tool_id}``.

A tool is activated at most once per agent: creating an activation that exists is a 409. The
tool must have a live definition in the tenant (``/v1/tools``): an unknown one is a 422.
Activations are hard-deleted. Tool ids match ``TOOL_ID_PATTERN`` (``^[a-z][a-z0-9_]{0,63}$``): a
body or path with another id is a 422. GET, POST and PATCH return the activation's ``revision``
as its ``ETag``; PATCH honours ``If-Match`` and never loses a concurrent change
(``focal.api.concurrency``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from fastapi.exceptions import RequestValidationError

from focal.alignment.models import TOOL_ID_PATTERN, ToolActivation
from focal.api.concurrency import IfMatchHeader, read_modify_write, with_etag
from focal.api.deps import AgentDep, ServicesDep
from focal.api.schemas.behaviour import ToolActivationCreate, ToolActivationOut, ToolActivationUpdate
from focal.api.schemas.common import ItemList
from focal.api.validation import build_model, patched
from focal.bootstrap import FocalServices
from focal.errors import ConflictError, NotFoundError

router = APIRouter(prefix="/v1/agents/{agent_id}/tools", tags=["tools"])

ToolId = Annotated[str, Path(pattern=TOOL_ID_PATTERN.pattern, examples=["lookup_order"])]


async def _activation(services: FocalServices, agent: AgentDep, tool_id: str) -> ToolActivation:
    activation = await services.config_store.get_tool_activation(agent.tenant_id, agent.id, tool_id)
    if activation is None:
        raise NotFoundError(f"tool {tool_id!r} is not activated for agent {agent.id}")
    return activation


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ToolActivationOut)
async def activate_tool(
    body: ToolActivationCreate, agent: AgentDep, services: ServicesDep, response: Response
) -> ToolActivation:
    store = services.config_store
    if await store.get_tool_definition(agent.tenant_id, body.tool_id) is None:
        raise RequestValidationError(
            [
                {
                    "type": "invalid_reference",
                    "loc": ("body", "tool_id"),
                    "msg": f"no tool named {body.tool_id!r} is defined (create it with POST /v1/tools)",
                    "input": None,
                }
            ]
        )
    if await store.get_tool_activation(agent.tenant_id, agent.id, body.tool_id) is not None:
        raise ConflictError(f"tool {body.tool_id!r} is already activated for agent {agent.id}")
    activation = build_model(
        ToolActivation, {**body.model_dump(), "tenant_id": agent.tenant_id, "agent_id": agent.id}
    )
    await store.save_tool_activation(activation)
    return with_etag(response, await _activation(services, agent, body.tool_id))


@router.get("", response_model=ItemList[ToolActivationOut])
async def list_tool_activations(agent: AgentDep, services: ServicesDep) -> ItemList[ToolActivationOut]:
    """The agent's tool activations, by tool id."""
    activations = await services.config_store.get_tool_activations(agent.tenant_id, agent.id)
    return ItemList[ToolActivationOut](items=[ToolActivationOut.model_validate(a) for a in activations])


@router.get("/{tool_id}", response_model=ToolActivationOut)
async def get_tool_activation(
    tool_id: ToolId, agent: AgentDep, services: ServicesDep, response: Response
) -> ToolActivation:
    return with_etag(response, await _activation(services, agent, tool_id))


@router.patch("/{tool_id}", response_model=ToolActivationOut)
async def update_tool_activation(
    tool_id: ToolId,
    body: ToolActivationUpdate,
    agent: AgentDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> ToolActivation:
    changes = body.model_dump(exclude_unset=True)

    async def reread() -> ToolActivation:
        return await _activation(services, agent, tool_id)

    async def write(current: ToolActivation) -> None:
        updated = patched(current, changes)
        await services.config_store.save_tool_activation(updated, expected_revision=current.revision)

    what = f"tool {tool_id!r} of agent {agent.id}"
    await read_modify_write(await reread(), reread, write, if_match=if_match, what=what)
    return with_etag(response, await reread())


@router.delete("/{tool_id}", status_code=status.HTTP_204_NO_CONTENT)
async def deactivate_tool(tool_id: ToolId, agent: AgentDep, services: ServicesDep) -> Response:
    if not await services.config_store.delete_tool_activation(agent.tenant_id, agent.id, tool_id):
        raise NotFoundError(f"tool {tool_id!r} is not activated for agent {agent.id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
