"""A session's variables, for operators: ``GET`` and ``PATCH /v1/sessions/{session_id}/variables``.

GET returns the values, when each was set, and the session's ``version`` (also the ``ETag``).
PATCH sets values (``null`` removes one) under that version: the body names the ``version`` it
was read at, and if a turn (or another edit) saved the session since, the PATCH is a 409 and
changes nothing. Values are JSON; names follow the variable name pattern. An edit is recorded as
a ``variables_updated`` audit event (the names, not the values). Edits are not written to the
customer's profile (turns do that for variables marked ``persist_to_profile``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import Field, StringConstraints

from focal.alignment.models import VARIABLE_NAME_PATTERN
from focal.api.deps import ServicesDep, TenantDep
from focal.api.schemas.common import RequestModel, ResponseModel
from focal.audit.models import AuditEvent
from focal.audit.stores.checks import check_event
from focal.conversation.models import Session
from focal.conversation.stores.session_codec import checked_for_save
from focal.errors import NotFoundError
from focal.models import MAX_INT4, utc_now

router = APIRouter(tags=["sessions"])

VariableName = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=VARIABLE_NAME_PATTERN.pattern)
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such session in this tenant"},
    409: {"description": "the session changed since the version given (read it again)"},
}


class SessionVariablesOut(ResponseModel):
    session_id: UUID
    version: int = Field(description="the session's version: send it back to PATCH")
    variables: dict[str, Any]
    set_at: dict[str, datetime] = Field(description="when each value was last set")


class SessionVariablesPatch(RequestModel):
    version: int = Field(ge=0, le=MAX_INT4, description="the version the variables were read at")
    variables: dict[VariableName, Any] = Field(
        min_length=1, max_length=1000, description="values to set; null removes a variable"
    )


def _shown(response: Response, session: Session) -> SessionVariablesOut:
    response.headers["ETag"] = f'"{session.version}"'
    return SessionVariablesOut(
        session_id=session.session_id,
        version=session.version,
        variables=session.variables,
        set_at=session.variables_set_at,
    )


async def _session(services: ServicesDep, tenant_id: UUID, session_id: UUID) -> Session:
    session = await services.session_store.get(tenant_id, session_id)
    if session is None:
        raise NotFoundError(f"session {session_id} not found")
    return session


@router.get("/v1/sessions/{session_id}/variables", response_model=SessionVariablesOut, responses=_ERRORS)
async def get_session_variables(
    session_id: UUID, tenant_id: TenantDep, services: ServicesDep, response: Response
) -> SessionVariablesOut:
    return _shown(response, await _session(services, tenant_id, session_id))


@router.patch("/v1/sessions/{session_id}/variables", response_model=SessionVariablesOut, responses=_ERRORS)
async def update_session_variables(
    session_id: UUID,
    body: SessionVariablesPatch,
    tenant_id: TenantDep,
    services: ServicesDep,
    response: Response,
) -> SessionVariablesOut:
    session = await _session(services, tenant_id, session_id)
    now = utc_now()
    for name, value in body.variables.items():
        if value is None:
            session.variables.pop(name, None)
            session.variables_set_at.pop(name, None)
        else:
            session.variables[name] = value
            session.variables_set_at[name] = now
    session.version = body.version  # the save succeeds only if the stored version is still this one
    event = AuditEvent(
        tenant_id=tenant_id,
        session_id=session_id,
        event_type="variables_updated",
        event_data={"names": sorted(body.variables), "source": "operator"},
    )
    checked_for_save(session)  # both records checked before the first write: a refusal writes nothing
    check_event(event)
    saved = await services.session_store.save(session)
    await services.audit_store.save_event(event)
    return _shown(response, saved)
