"""The OpenAPI document describes the responses the API really gives.

Errors are the envelope, never FastAPI's ``{"detail"}``; every ``/v1`` operation documents 401;
operations document 400/413/422 for a body, 422 for parameters, 404 for a path id, and whatever
their route declares (409...). The fuzz test (test_fuzz.py) checks that every response it
observes has a documented status and matches the documented schema; these tests check the
document itself, including for a route added after the app was built.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID, uuid4

import jsonschema
import pytest
from fastapi import Body, FastAPI
from openapi_spec_validator import validate

from focal.api.app import create_app
from focal.api.deps import TenantDep
from focal.bootstrap import build_memory_services
from tests.api.conftest import ApiHarness, memory_settings

_METHODS = ("get", "put", "post", "delete", "patch")
_ENVELOPE = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}


def _app() -> FastAPI:
    settings = memory_settings()
    return create_app(settings, services=build_memory_services(settings))


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in _METHODS
    ]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return _app().openapi()


def test_the_document_is_valid_openapi(spec: dict[str, Any]) -> None:
    validate(spec)
    assert len(_operations(spec)) > 30


def test_every_error_response_is_the_envelope(spec: dict[str, Any]) -> None:
    checked = 0
    for path, method, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert response["content"] == _ENVELOPE, f"{method.upper()} {path} {status}"
                assert response["description"], f"{method.upper()} {path} {status}"
                checked += 1
    assert checked > 100
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["ErrorEnvelope"]["required"] == ["error"]
    assert set(schemas["ErrorBody"]["required"]) == {"code", "message", "details"}


def test_every_v1_operation_documents_401(spec: dict[str, Any]) -> None:
    v1 = [(path, method, op) for path, method, op in _operations(spec) if path.startswith("/v1/")]
    assert len(v1) > 30
    for path, method, operation in v1:
        assert operation["security"] == [{"HTTPBearer": []}], f"{method.upper()} {path}"
        assert "401" in operation["responses"], f"{method.upper()} {path}"
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    ops = [(path, op) for path, _, op in _operations(spec) if not path.startswith("/v1/")]
    assert all("401" not in operation["responses"] for _, operation in ops)


def test_statuses_follow_from_what_an_operation_takes(spec: dict[str, Any]) -> None:
    for path, method, operation in _operations(spec):
        name = f"{method.upper()} {path}"
        responses = operation["responses"]
        parameters = operation.get("parameters", [])
        if "requestBody" in operation:
            assert {"400", "413", "422"} <= set(responses), name
        else:
            assert "413" not in responses, name
        if parameters:
            assert "422" in responses, name
        if any(parameter["in"] == "path" for parameter in parameters):
            assert "404" in responses, name
        if any(p["in"] == "header" and p["name"].lower() == "if-match" for p in parameters):
            assert {"409", "412"} <= set(responses), name
            assert "ETag" in responses["412"]["headers"], name
    patches_with_if_match = [
        path
        for path, method, operation in _operations(spec)
        if method == "patch" and any(p["name"].lower() == "if-match" for p in operation.get("parameters", []))
    ]
    assert "/v1/agents/{agent_id}" in patches_with_if_match and len(patches_with_if_match) >= 5
    chat = spec["paths"]["/v1/agents/{agent_id}/chat"]["post"]["responses"]
    assert {"404", "409", "429", "502", "503"} <= set(chat)
    assert chat["409"]["description"].startswith("the agent is disabled")  # the route's own text


def test_a_route_added_later_is_documented_the_same_way() -> None:
    app = _app()

    async def swap(
        thing_id: UUID, tenant_id: TenantDep, payload: Annotated[dict[str, int], Body()]
    ) -> dict[str, int]:
        return payload

    app.add_api_route(
        "/v1/things/{thing_id}/swap",
        swap,
        methods=["POST"],
        responses={409: {"description": "someone else swapped first"}, 412: {"description": "stale"}},
    )
    operation = app.openapi()["paths"]["/v1/things/{thing_id}/swap"]["post"]
    assert set(operation["responses"]) == {"200", "400", "401", "404", "409", "412", "413", "422", "503"}
    assert all(
        operation["responses"][s]["content"] == _ENVELOPE for s in operation["responses"] if s != "200"
    )
    assert operation["responses"]["409"]["description"] == "someone else swapped first"


def _accepts_null(schema: dict[str, Any], spec: dict[str, Any]) -> bool:
    if schema == {} or set(schema) <= {"title", "description", "default"}:
        return True  # any JSON value
    if "$ref" in schema:
        return _accepts_null(spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], spec)
    if schema.get("type") == "null":
        return True
    return any(_accepts_null(variant, spec) for variant in schema.get("anyOf", []))


def _schema_of(ref_holder: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = ref_holder["content"]["application/json"]["schema"]["$ref"]
    schema: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def test_patch_fields_are_nullable_only_where_the_resource_field_is(spec: dict[str, Any]) -> None:
    patches = [(path, op) for path, method, op in _operations(spec) if method == "patch"]
    assert len(patches) >= 6
    for path, operation in patches:
        request = _schema_of(operation["requestBody"], spec)
        resource = _schema_of(operation["responses"]["200"], spec)
        for field, schema in request["properties"].items():
            if _accepts_null(schema, spec):
                assert _accepts_null(resource["properties"][field], spec), f"PATCH {path}: {field}"
            else:
                assert schema.get("default", "absent") is not None, f"PATCH {path}: {field} defaults to null"
    agent_update = spec["components"]["schemas"]["AgentUpdate"]["properties"]
    assert not _accepts_null(agent_update["name"], spec)
    assert _accepts_null(agent_update["description"], spec)


async def test_null_for_a_non_nullable_patch_field_is_422_and_changes_nothing(api: ApiHarness) -> None:
    created = (
        await api.client.post("/v1/agents", json={"name": "kept", "description": "d"}, headers=api.headers)
    ).json()
    for field in ("name", "enabled", "temperature", "max_tokens"):
        response = await api.client.patch(
            f"/v1/agents/{created['id']}", json={field: None}, headers=api.headers
        )
        assert response.status_code == 422, field
        assert response.json()["error"]["details"]["errors"][0]["field"] == f"body.{field}"
    stored = (await api.client.get(f"/v1/agents/{created['id']}", headers=api.headers)).json()
    assert stored == created
    cleared = await api.client.patch(
        f"/v1/agents/{created['id']}", json={"description": None}, headers=api.headers
    )
    assert cleared.status_code == 200
    assert cleared.json()["description"] is None and cleared.json()["name"] == "kept"


async def test_real_error_responses_match_the_documented_envelope(api: ApiHarness) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope", "components": spec["components"]}
    limit = api.services.settings.server.max_body_bytes
    json_type = {"Content-Type": "application/json"}
    observed = [
        ("/v1/agents", "get", await api.client.get("/v1/agents")),
        ("/v1/agents/{agent_id}", "get", await api.client.get(f"/v1/agents/{uuid4()}", headers=api.headers)),
        ("/v1/agents", "post", await api.client.post("/v1/agents", json={"name": 1}, headers=api.headers)),
        (
            "/v1/agents",
            "post",
            await api.client.post("/v1/agents", content=b"[" + b" " * limit + b"]", headers=json_type),
        ),
        (
            "/v1/agents",
            "post",
            await api.client.post("/v1/agents", content=b"\xff", headers={**api.headers, **json_type}),
        ),
    ]
    assert [response.status_code for _, _, response in observed] == [401, 404, 422, 413, 400]
    for path, method, response in observed:
        jsonschema.validate(response.json(), envelope)
        assert str(response.status_code) in spec["paths"][path][method]["responses"]
