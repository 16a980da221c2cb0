"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis), in-process.

The app runs on the in-memory stores with offline providers. Path ``agent_id``s point at a real
agent of the token's tenant, so generated bodies reach the handlers, not only the 404 path.

- Valid requests (generated from the schema): no 5xx, and every response is documented: its
  status, content type, headers and body match the operation's declared response.
- Invalid requests (schemathesis breaks the schema: a ``true`` for an integer, a missing field, a
  string for a boolean...): each is refused with a 4xx, whose body is the documented envelope.

Bounded: a few examples per operation, no shrinking.
"""

from __future__ import annotations

import asyncio
from uuid import uuid4

import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from focal.alignment.models import Agent
from focal.api.app import create_app
from focal.bootstrap import build_memory_services
from tests.api.conftest import bearer, memory_settings

_SETTINGS = memory_settings()
_SERVICES = build_memory_services(_SETTINGS)
_SERVICES.webhooks = None  # a generated handoff rule must not send generated webhook URLs anything
_APP = create_app(_SETTINGS, services=_SERVICES)
_TENANT = uuid4()
_HEADERS = bearer(_TENANT, ttl_seconds=3600)
_AGENT = Agent(tenant_id=_TENANT, name="fuzzed")
asyncio.run(_SERVICES.config_store.save_agent(_AGENT))

_CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

positive = schemathesis.openapi.from_asgi("/openapi.json", _APP)
positive.config.generation.update(modes=[GenerationMode.POSITIVE])
# Only operations that take input: /health, /ready, /metrics and GET /v1/tools (no parameters)
# have nothing to break.
negative = (
    schemathesis.openapi.from_asgi("/openapi.json", _APP)
    .include(path_regex="^/v1/")
    .exclude(method="GET", path="/v1/tools")
)
# The token is not fuzzed (a request without one is a 401 before anything else is looked at).
negative.config.generation.update(modes=[GenerationMode.NEGATIVE], with_security_parameters=False)

_HYPOTHESIS = settings(
    max_examples=6,
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,  # no .hypothesis/ directory in the working tree
)


def _at_the_fuzzed_agent(case: schemathesis.Case) -> None:
    """Point a valid path ``agent_id`` at the agent, so the request reaches the handler."""
    if case.meta is not None and case.meta.is_negative_at(ParameterLocation.PATH):
        return  # the path is the invalid part of this request: leave it invalid
    if case.path_parameters and "agent_id" in case.path_parameters:
        deleting_the_agent = case.method == "DELETE" and case.path == "/v1/agents/{agent_id}"
        if not deleting_the_agent:
            case.path_parameters["agent_id"] = str(_AGENT.id)


@positive.parametrize()
@_HYPOTHESIS
def test_valid_requests_get_documented_responses(case: schemathesis.Case) -> None:
    _at_the_fuzzed_agent(case)
    case.call_and_validate(headers=_HEADERS, checks=_CONFORMANCE)


@negative.parametrize()
@_HYPOTHESIS
def test_invalid_requests_are_refused(case: schemathesis.Case) -> None:
    _at_the_fuzzed_agent(case)
    case.call_and_validate(headers=_HEADERS, checks=[*_CONFORMANCE, negative_data_rejection])
