"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis), in-process.

The app runs on the in-memory stores with offline providers. Path ``agent_id``s point at a real
agent of the token's tenant, so generated bodies reach the handlers, not only the 404 path.
No generated request may produce a 5xx, and every response must match the documented schema.
Bounded: a few examples per operation, no shrinking.
"""

from __future__ import annotations

import asyncio
from uuid import uuid4

import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from focal.alignment.models import Agent
from focal.api.app import create_app
from focal.bootstrap import build_memory_services
from tests.api.conftest import bearer, memory_settings

_SETTINGS = memory_settings()
_SERVICES = build_memory_services(_SETTINGS)
_APP = create_app(_SETTINGS, services=_SERVICES)
_TENANT = uuid4()
_HEADERS = bearer(_TENANT, ttl_seconds=3600)
_AGENT = Agent(tenant_id=_TENANT, name="fuzzed")
asyncio.run(_SERVICES.config_store.save_agent(_AGENT))

schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,  # no .hypothesis/ directory in the working tree
)
def test_no_server_errors(case: schemathesis.Case) -> None:
    if case.path_parameters and "agent_id" in case.path_parameters:
        deleting_the_agent = case.method == "DELETE" and case.path == "/v1/agents/{agent_id}"
        if not deleting_the_agent:
            case.path_parameters["agent_id"] = str(_AGENT.id)
    case.call_and_validate(headers=_HEADERS, checks=[not_a_server_error, response_schema_conformance])
