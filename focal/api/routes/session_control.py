"""Session control: ``POST /v1/sessions/{id}/messages`` (an operator's reply), ``PATCH
/v1/sessions/{id}`` (the mode) and ``POST /v1/sessions/{id}/close``.

The logic is ``focal.alignment.turn.control.SessionControl``; these routes translate HTTP. The
session's ``version`` is its ETag: ``If-Match: "<version>"`` makes a change conditional (412 when
the session moved on); without it the change is applied to the session as it is when written
(re-read and retried while concurrent writes keep winning, then 409).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response, status

from focal.alignment.turn.control import SessionControl
from focal.api.concurrency import IfMatchHeader, etag, read_modify_write
from focal.api.deps import ServicesDep, TenantDep
from focal.api.schemas.control import OperatorMessage, OperatorMessageOut, SessionUpdate
from focal.api.schemas.conversations import SessionOut
from focal.bootstrap import FocalServices
from focal.conversation.models import Session

router = APIRouter(tags=["sessions"])

_CLOSED: dict[int | str, dict[str, Any]] = {409: {"description": "the session is closed"}}


def session_control(services: FocalServices) -> SessionControl:
    return SessionControl(
        session_store=services.session_store,
        audit_store=services.audit_store,
        memory_store=services.memory_store,
        embedder=services.embedding_provider,
    )


@dataclass(frozen=True)
class _Versioned:
    """A session seen through ``read_modify_write``'s eyes: its version is the revision."""

    session: Session

    @property
    def revision(self) -> int:
        return self.session.version


async def _conditional(
    services: FocalServices,
    tenant_id: UUID,
    session_id: UUID,
    if_match: str | None,
    change: Any,
    response: Response,
) -> Session:
    control = session_control(services)
    saved: list[Session] = []

    async def reread() -> _Versioned:
        return _Versioned(await control.get(tenant_id, session_id))

    async def write(current: _Versioned) -> None:
        saved.append(await change(control, current.session))

    await read_modify_write(await reread(), reread, write, if_match=if_match, what=f"session {session_id}")
    response.headers["ETag"] = etag(saved[-1].version)
    return saved[-1]


@router.post(
    "/v1/sessions/{session_id}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=OperatorMessageOut,
    responses=_CLOSED,
)
async def post_operator_message(
    session_id: UUID, body: OperatorMessage, tenant_id: TenantDep, services: ServicesDep
) -> OperatorMessageOut:
    """An operator's reply: the session's next turn (source ``human_agent``), in the audit trail
    and in the history the LLM sees on later turns."""
    reply = await session_control(services).post_operator_message(
        tenant_id, session_id, body.text, author=body.author
    )
    return OperatorMessageOut(
        session_id=reply.session.session_id,
        turn_id=reply.record.id,
        turn_number=reply.record.turn_number,
        text=reply.record.assistant_response,
        author=body.author,
        session_mode=reply.session.mode,
        created_at=reply.record.created_at,
    )


@router.patch("/v1/sessions/{session_id}", response_model=SessionOut, responses=_CLOSED)
async def update_session(
    session_id: UUID,
    body: SessionUpdate,
    tenant_id: TenantDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> Session:
    """Set the session's mode (AUTO: the agent answers again; MANUAL: a person answers)."""

    async def change(control: SessionControl, session: Session) -> Session:
        return session if body.mode is None else await control.set_mode(session, body.mode)

    return await _conditional(services, tenant_id, session_id, if_match, change, response)


@router.post("/v1/sessions/{session_id}/close", response_model=SessionOut)
async def close_session(
    session_id: UUID,
    tenant_id: TenantDep,
    services: ServicesDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> Session:
    """Close the session: a later chat naming it is a 409; one without ``session_id`` opens a new
    session. Closing a closed session changes nothing."""

    async def change(control: SessionControl, session: Session) -> Session:
        return await control.close(session)

    return await _conditional(services, tenant_id, session_id, if_match, change, response)
