"""FastAPI dependencies (the process's services, the caller's tenant, the agent in the path) and the
checks that scope an agent's children (rules, templates, variables, scenarios) to that agent."""

from __future__ import annotations

from typing import Annotated, Protocol, TypeVar
from uuid import UUID

from fastapi import Depends, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from focal.alignment.models import Agent
from focal.api.auth import decode_tenant_id, unauthorized
from focal.bootstrap import FocalServices
from focal.errors import ConfigurationError, NotFoundError
from focal.logging import bind_request_context

__all__ = [
    "AgentDep",
    "ServicesDep",
    "TenantDep",
    "get_agent",
    "get_services",
    "get_tenant_id",
    "no_content_if_deleted",
    "of_agent",
]

# auto_error=False: a missing header becomes our 401 envelope instead of FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="A JWT signed with the server's secret (HS256)")


async def get_services(request: Request) -> FocalServices:
    services: FocalServices | None = getattr(request.app.state, "services", None)
    if services is None:
        raise ConfigurationError("the application's services are not initialised (lifespan not run)")
    return services


ServicesDep = Annotated[FocalServices, Depends(get_services)]


async def get_tenant_id(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> UUID:
    """The tenant named by the bearer token; 401 without a valid one.

    ``async`` on purpose: FastAPI runs async dependencies in the request's own task, so the
    ``tenant_id`` bound to the log context here is seen by every log line of the handler (a sync
    dependency would run in a worker thread whose context is thrown away).
    """
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise unauthorized("missing bearer token")
    secret = services.settings.auth.jwt_secret
    if secret is None:
        raise ConfigurationError("no JWT secret configured (FOCAL_AUTH__JWT_SECRET)")
    tenant_id = decode_tenant_id(credentials.credentials, secret)
    request.state.tenant_id = tenant_id  # read by the access log
    bind_request_context(tenant_id=tenant_id)
    return tenant_id


TenantDep = Annotated[UUID, Depends(get_tenant_id)]


async def get_agent(agent_id: UUID, tenant_id: TenantDep, services: ServicesDep) -> Agent:
    """The tenant's live agent named in the path; 404 when absent or another tenant's."""
    agent = await services.config_store.get_agent(tenant_id, agent_id)
    if agent is None:
        raise NotFoundError(f"agent {agent_id} not found")
    return agent


AgentDep = Annotated[Agent, Depends(get_agent)]


class _AgentChild(Protocol):
    @property
    def agent_id(self) -> UUID: ...


_ChildT = TypeVar("_ChildT", bound=_AgentChild)


def of_agent(child: _ChildT | None, agent: Agent, kind: str, child_id: UUID) -> _ChildT:
    """A rule, template, variable or scenario looked up by id, when it exists and belongs to the agent
    in the path (the store already scoped it to the tenant); 404 otherwise."""
    if child is None or child.agent_id != agent.id:
        raise NotFoundError(f"{kind} {child_id} not found")
    return child


def no_content_if_deleted(deleted: bool, kind: str, child_id: UUID) -> Response:
    """204 after a child's delete; 404 when the store found nothing to delete (a concurrent delete)."""
    if not deleted:
        raise NotFoundError(f"{kind} {child_id} not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
