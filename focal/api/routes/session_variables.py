"""A session's variables, for operators: ``GET`` and ``PATCH /v1/sessions/{session_id}/variables``.

GET returns the values, when each was set, and the session's ``version`` (also the ``ETag``).
PATCH sets values (``null`` removes one) under that version: the body names the ``version`` it
was read at, and if a turn (or another edit) saved the session since, the PATCH is a 409 and
changes nothing. Values are JSON; names follow the variable name pattern. An edit is recorded as
a ``variables_updated`` audit event (the names, not the values): the logic is
``SessionControl.set_variables``. Edits are not written to the customer's profile (turns do that
for variables marked ``persist_to_profile``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import Field, StringConstraints

from focal.alignment.models import VARIABLE_NAME_PATTERN
from focal.api.deps import ServicesDep, TenantDep
from focal.api.routes.session_control import session_control
from focal.api.schemas.common import RequestModel, ResponseModel
from focal.conversation.models import Session
from focal.models import MAX_INT4

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


@router.get("/v1/sessions/{session_id}/variables", response_model=SessionVariablesOut, responses=_ERRORS)
async def get_session_variables(
    session_id: UUID, tenant_id: TenantDep, services: ServicesDep, response: Response
) -> SessionVariablesOut:
    return _shown(response, await session_control(services).get(tenant_id, session_id))


@router.patch("/v1/sessions/{session_id}/variables", response_model=SessionVariablesOut, responses=_ERRORS)
async def update_session_variables(
    session_id: UUID,
    body: SessionVariablesPatch,
    tenant_id: TenantDep,
    services: ServicesDep,
    response: Response,
) -> SessionVariablesOut:
    control = session_control(services)
    session = await control.get(tenant_id, session_id)
    saved = await control.set_variables(session, body.version, body.variables)
    return _shown(response, saved)
