"""The tenant's tool definitions: ``/v1/tools`` and ``/v1/tools/{name}``.

A definition is the tenant's, not an agent's: agents use it by activating its name
(``/v1/agents/{id}/tools``). Names match ``TOOL_ID_PATTERN`` and are unique among the tenant's
live definitions (409 otherwise); a name never changes. The secret is write-only: it is accepted
on POST and PATCH (``null`` removes it) and never returned (``has_secret`` says whether one is
stored). GET, POST and PATCH return the ``revision`` as the ``ETag``; PATCH honours ``If-Match``
(``focal.api.concurrency``); a PATCH that moves a tool with a secret to another scheme, host or
port must send the secret again (422 otherwise). DELETE is a soft delete: activations naming the
tool stay, but no turn offers or runs a tool without a live definition.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Response, status
from fastapi.exceptions import RequestValidationError

from focal.alignment.models import TOOL_ID_PATTERN, ToolDefinition
from focal.api.concurrency import IfMatchHeader, read_modify_write, with_etag
from focal.api.deps import ServicesDep, TenantDep
from focal.api.schemas.common import ItemList
from focal.api.schemas.tools import ToolDefinitionCreate, ToolDefinitionOut, ToolDefinitionUpdate
from focal.api.validation import build_model, patched
from focal.bootstrap import FocalServices
from focal.errors import NotFoundError

router = APIRouter(prefix="/v1/tools", tags=["tools"])

ToolName = Annotated[str, Path(pattern=TOOL_ID_PATTERN.pattern, examples=["lookup_order"])]
_ERRORS: dict[int | str, dict[str, Any]] = {409: {"description": "a live tool of this name exists"}}


async def _definition(services: FocalServices, tenant_id: TenantDep, name: str) -> ToolDefinition:
    definition = await services.config_store.get_tool_definition(tenant_id, name)
    if definition is None:
        raise NotFoundError(f"tool {name!r} not found")
    return definition


def _origin(definition: ToolDefinition) -> tuple[str, str, int | None]:
    parts = urlsplit(definition.http.url_template)
    return parts.scheme, definition.http.host, parts.port


def _refuse_secret_moving(current: ToolDefinition, updated: ToolDefinition) -> None:
    """A stored secret goes only where it was set for: a PATCH that moves the tool to another
    scheme, host or port must send the secret again (or ``null``), else anyone holding a token
    could read the write-only secret by pointing the tool at a server of theirs."""
    if _origin(updated) != _origin(current):
        raise RequestValidationError(
            [
                {
                    "type": "secret_required",
                    "loc": ("body", "secret"),
                    "msg": "the tool moves to another scheme, host or port: send its secret again "
                    "(or null to remove it)",
                    "input": None,
                }
            ]
        )


def _shown(response: Response, definition: ToolDefinition) -> ToolDefinitionOut:
    return with_etag(response, ToolDefinitionOut.of(definition))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ToolDefinitionOut, responses=_ERRORS)
async def create_tool(
    body: ToolDefinitionCreate, tenant_id: TenantDep, services: ServicesDep, response: Response
) -> ToolDefinitionOut:
    definition = build_model(ToolDefinition, {**body.model_dump(), "tenant_id": tenant_id})
    await services.config_store.save_tool_definition(definition)
    return _shown(response, await _definition(services, tenant_id, definition.name))


@router.get("", response_model=ItemList[ToolDefinitionOut])
async def list_tools(tenant_id: TenantDep, services: ServicesDep) -> ItemList[ToolDefinitionOut]:
    """The tenant's live tool definitions, by name."""
    definitions = await services.config_store.get_tool_definitions(tenant_id)
    return ItemList[ToolDefinitionOut](items=[ToolDefinitionOut.of(d) for d in definitions])


@router.get("/{name}", response_model=ToolDefinitionOut)
async def get_tool(
    name: ToolName, tenant_id: TenantDep, services: ServicesDep, response: Response
) -> ToolDefinitionOut:
    return _shown(response, await _definition(services, tenant_id, name))


@router.patch("/{name}", response_model=ToolDefinitionOut)
async def update_tool(
    name: ToolName,
    body: ToolDefinitionUpdate,
    tenant_id: TenantDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> ToolDefinitionOut:
    changes = body.model_dump(exclude_unset=True)

    async def reread() -> ToolDefinition:
        return await _definition(services, tenant_id, name)

    async def write(current: ToolDefinition) -> None:
        updated = patched(current, changes)
        if current.secret is not None and "secret" not in changes:
            _refuse_secret_moving(current, updated)
        await services.config_store.save_tool_definition(updated, expected_revision=current.revision)

    await read_modify_write(await reread(), reread, write, if_match=if_match, what=f"tool {name!r}")
    return _shown(response, await reread())


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tool(name: ToolName, tenant_id: TenantDep, services: ServicesDep) -> Response:
    if not await services.config_store.delete_tool_definition(tenant_id, name):
        raise NotFoundError(f"tool {name!r} not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
