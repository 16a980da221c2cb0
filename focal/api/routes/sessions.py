"""Sessions and their audit trail: ``/v1/sessions/{id}``, ``/v1/agents/{agent_id}/sessions``."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel

from focal.api.deps import AgentDep, ServicesDep, TenantDep
from focal.api.schemas.common import ItemList
from focal.api.schemas.conversations import SessionOut
from focal.audit.models import TurnRecord
from focal.conversation.models import Session, SessionStatus
from focal.errors import NotFoundError

router = APIRouter(tags=["sessions"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]


class TurnPage(BaseModel):
    """A page of turns. ``total`` is the session's turn count (null once the session is deleted:
    the audit trail outlives the session)."""

    items: list[TurnRecord]
    total: int | None
    limit: int
    offset: int


@router.get("/v1/agents/{agent_id}/sessions", response_model=ItemList[SessionOut])
async def list_agent_sessions(
    agent: AgentDep, services: ServicesDep, status: SessionStatus | None = None, limit: Limit = 100
) -> ItemList[SessionOut]:
    """The agent's sessions, most recently active first."""
    sessions = await services.session_store.list_by_agent(
        agent.tenant_id, agent.id, status=status, limit=limit
    )
    return ItemList[SessionOut](items=[SessionOut.model_validate(s) for s in sessions])


async def _session(services: ServicesDep, tenant_id: UUID, session_id: UUID) -> Session:
    session = await services.session_store.get(tenant_id, session_id)
    if session is None:
        raise NotFoundError(f"session {session_id} not found")
    return session


@router.get("/v1/sessions/{session_id}", response_model=SessionOut)
async def get_session(session_id: UUID, tenant_id: TenantDep, services: ServicesDep) -> Session:
    return await _session(services, tenant_id, session_id)


@router.delete("/v1/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(session_id: UUID, tenant_id: TenantDep, services: ServicesDep) -> Response:
    """Deletes the live session; its audit trail (turns, events) is kept."""
    if not await services.session_store.delete(tenant_id, session_id):
        raise NotFoundError(f"session {session_id} not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/sessions/{session_id}/turns", response_model=TurnPage)
async def list_session_turns(
    session_id: UUID, tenant_id: TenantDep, services: ServicesDep, limit: Limit = 100, offset: Offset = 0
) -> TurnPage:
    """The session's turns in order (turn_number asc), kept after the session is deleted.

    404 when the tenant has neither the session nor any turn of it, whatever the offset; a page
    past the last turn of a known session is empty.
    """
    audit = services.audit_store
    session = await services.session_store.get(tenant_id, session_id)
    turns = await audit.list_turns_by_session(tenant_id, session_id, limit=limit, offset=offset)
    if session is None and not turns:
        # An empty page past the end of a deleted session's trail is still a page of a known trail.
        known = offset > 0 and bool(await audit.list_turns_by_session(tenant_id, session_id, limit=1))
        if not known:
            raise NotFoundError(f"session {session_id} not found")
    total = session.turn_count if session is not None else None
    return TurnPage(items=turns, total=total, limit=limit, offset=offset)
