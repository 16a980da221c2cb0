"""The error envelope, status mapping, body size limit, request ids (also on a 500), metrics labels."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID, uuid4

import pytest
import pytest_asyncio
import structlog
from fastapi import FastAPI
from openapi_spec_validator import validate
from structlog.testing import capture_logs

from focal.api.app import create_app
from focal.api.deps import TenantDep
from focal.api.middleware import UNMATCHED_ROUTE
from focal.bootstrap import build_memory_services
from focal.conversation.models import Channel
from focal.errors import (
    ConfigurationError,
    ContentFilterError,
    ProviderUnavailableError,
    RateLimitError,
    SchemaVersionError,
    StoreConnectionError,
)
from tests.api.conftest import ApiHarness, asgi_client, bearer, memory_settings

_RAISERS: dict[str, Exception] = {
    "rate-limit": RateLimitError("slow down", provider="fake", status_code=429, retry_after=2.5),
    "provider-down": ProviderUnavailableError("overloaded", provider="fake", status_code=529),
    "provider-other": ContentFilterError("refused", provider="fake"),
    "store-down": StoreConnectionError("cannot connect to PostgreSQL at db:5432/focal"),
    "schema": SchemaVersionError("the database schema is behind: run `focal db upgrade`"),
    "bug": RuntimeError("secret internal detail"),
}


def _app_with_raisers() -> FastAPI:
    settings = memory_settings()
    app = create_app(settings, services=build_memory_services(settings))
    for name, exc in _RAISERS.items():
        app.add_api_route(f"/raise/{name}", _raiser(exc), methods=["GET"], include_in_schema=False)
    return app


def _raiser(exc: Exception) -> Callable[[], Awaitable[None]]:
    async def raiser() -> None:
        raise exc

    return raiser


@pytest_asyncio.fixture
async def raising_client() -> AsyncIterator[object]:
    async with asgi_client(_app_with_raisers(), raise_app_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("rate-limit", 429, "rate_limited"),
        ("provider-down", 503, "service_unavailable"),
        ("provider-other", 502, "provider_error"),
        ("store-down", 503, "service_unavailable"),
        ("schema", 503, "schema_mismatch"),
        ("bug", 500, "internal_error"),
    ],
)
async def test_errors_map_to_statuses(raising_client: object, name: str, status: int, code: str) -> None:
    with capture_logs():  # a 500's traceback is captured, not rendered (slowly) to stderr
        response = await raising_client.get(f"/raise/{name}")  # type: ignore[attr-defined]
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert set(response.json()["error"]) == {"code", "message", "details"}


async def test_rate_limit_sets_retry_after(raising_client: object) -> None:
    response = await raising_client.get("/raise/rate-limit")  # type: ignore[attr-defined]
    assert response.headers["retry-after"] == "3"


async def test_500_hides_the_exception(raising_client: object) -> None:
    with capture_logs():  # the traceback goes to the log: captured, not rendered (slow) to stderr
        response = await raising_client.get("/raise/bug")  # type: ignore[attr-defined]
    assert response.json()["error"]["message"] == "internal server error"
    assert len(response.headers["x-request-id"]) == 32  # a generated id, on a 500 too
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text


async def test_store_outage_does_not_leak_the_host(raising_client: object) -> None:
    response = await raising_client.get("/raise/store-down")  # type: ignore[attr-defined]
    assert "db:5432" not in response.text


async def test_unknown_path_and_method_use_the_envelope(api: ApiHarness) -> None:
    missing = await api.client.get("/v1/nothing-here", headers=api.headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong_method = await api.client.put("/v1/agents", headers=api.headers, json={})
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


async def test_invalid_json_is_422(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/agents", content=b"{not json", headers={**api.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


async def test_oversized_body_is_413_and_writes_nothing(api: ApiHarness) -> None:
    limit = api.services.settings.server.max_body_bytes
    body = '{"name": "big", "description": "' + "x" * limit + '"}'
    response = await api.client.post(
        "/v1/agents", content=body, headers={**api.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert (await api.services.config_store.get_agents(api.tenant_id))[1] == 0


async def test_oversized_chunked_body_is_413(api: ApiHarness) -> None:
    limit = api.services.settings.server.max_body_bytes

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the middleware must count
        yield b'{"name": "big", "description": "'
        for _ in range(limit // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    response = await api.client.post(
        "/v1/agents", content=chunks(), headers={**api.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert (await api.services.config_store.get_agents(api.tenant_id))[1] == 0


async def test_body_under_the_limit_passes(api: ApiHarness) -> None:
    description = "y" * (api.services.settings.server.max_body_bytes // 2)
    response = await api.client.post(
        "/v1/agents", json={"name": "ok", "description": description}, headers=api.headers
    )
    assert response.status_code == 201
    assert response.json()["description"] == description


async def test_request_id_is_echoed_or_generated(api: ApiHarness) -> None:
    echoed = await api.client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await api.client.get("/health", headers={"X-Request-ID": "bad id\nwith newline"})
    assert generated.headers["x-request-id"] != "bad id\nwith newline"
    assert len(generated.headers["x-request-id"]) == 32


async def test_metrics_count_by_route_template(api: ApiHarness) -> None:
    for _ in range(2):
        await api.client.get(f"/v1/agents/{uuid4()}", headers=api.headers)
    text = (await api.client.get("/metrics")).text
    assert 'focal_http_requests_total{method="GET",route="/v1/agents/{agent_id}",status="404"} 2.0' in text
    assert "focal_http_request_duration_seconds_bucket" in text
    for path in ("/v1/no-such-thing-1", "/v1/no-such-thing-2"):
        await api.client.get(path, headers=api.headers)
    await api.client.get("/openapi.json")
    text = (await api.client.get("/metrics")).text
    assert 'route="<unmatched>",status="404"} 2.0' in text
    assert "no-such-thing" not in text
    assert 'route="/openapi.json",status="200"} 1.0' in text


def test_two_apps_have_separate_registries() -> None:
    settings = memory_settings()
    first = create_app(settings, services=build_memory_services(settings))
    second = create_app(settings, services=build_memory_services(settings))
    assert first.state.metrics.registry is not second.state.metrics.registry


def test_app_refuses_to_start_without_a_secret() -> None:
    settings = memory_settings(auth={"jwt_secret": None})
    with pytest.raises(ConfigurationError, match="FOCAL_AUTH__JWT_SECRET"):
        create_app(settings)


async def test_openapi_is_valid(api: ApiHarness) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    validate(spec)
    paths = spec["paths"]
    for path in (
        "/v1/agents",
        "/v1/agents/{agent_id}/rules/{rule_id}",
        "/v1/agents/{agent_id}/scenarios",
        "/v1/agents/{agent_id}/tools/{tool_id}",
        "/v1/sessions/{session_id}/turns",
        "/v1/profiles/by-channel",
        "/v1/agents/{agent_id}/memory/search",
        "/ready",
    ):
        assert path in paths
    assert "tenant_id" not in spec["components"]["schemas"]["AgentCreate"]["properties"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_tenant_id_in_a_body_is_refused(api: ApiHarness) -> None:
    other = uuid4()
    response = await api.client.post(
        "/v1/agents", json={"name": "a", "tenant_id": str(other)}, headers=api.headers
    )
    assert response.status_code == 422
    assert "body.tenant_id: Extra inputs are not permitted" in response.json()["error"]["message"]
    assert (await api.services.config_store.get_agents(other))[1] == 0
    assert (await api.services.config_store.get_agents(api.tenant_id))[1] == 0
    seen_by_other = await api.client.get("/v1/agents", headers=bearer(other))
    assert seen_by_other.status_code == 200
    assert seen_by_other.json()["total"] == 0


async def test_request_context_reaches_the_handler(api: ApiHarness) -> None:
    async def context(tenant_id: TenantDep) -> dict[str, object]:
        return dict(structlog.contextvars.get_contextvars())

    api.app.add_api_route("/v1/context", context, methods=["GET"])
    response = await api.client.get("/v1/context", headers={**api.headers, "X-Request-ID": "req-42"})
    assert response.json() == {"request_id": "req-42", "tenant_id": str(api.tenant_id)}


async def test_oversized_patch_is_413_and_changes_nothing(api: ApiHarness) -> None:
    created = await api.client.post("/v1/agents", json={"name": "small"}, headers=api.headers)
    agent_id = created.json()["id"]
    limit = api.services.settings.server.max_body_bytes
    body = '{"description": "' + "x" * limit + '"}'
    response = await api.client.patch(
        f"/v1/agents/{agent_id}", content=body, headers={**api.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    stored = await api.services.config_store.get_agent(api.tenant_id, UUID(agent_id))
    assert stored is not None and stored.description is None
    assert stored.updated_at.isoformat().replace("+00:00", "Z") == created.json()["updated_at"]


async def test_oversized_put_is_413_and_writes_nothing(api: ApiHarness) -> None:
    profile = await api.services.profile_store.get_or_create(api.tenant_id, Channel.WEB, "visitor-1")
    limit = api.services.settings.server.max_body_bytes
    body = '{"value": "' + "x" * limit + '"}'
    response = await api.client.put(
        f"/v1/profiles/{profile.id}/fields/nickname",
        content=body,
        headers={**api.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    history = await api.client.get(f"/v1/profiles/{profile.id}/fields/nickname/history", headers=api.headers)
    assert history.status_code == 200 and history.json()["items"] == []
    reloaded = await api.services.profile_store.get_by_customer_id(api.tenant_id, profile.id)
    assert reloaded is not None and "nickname" not in reloaded.fields


async def test_500_carries_the_request_id_and_logs_the_context(api: ApiHarness) -> None:
    async def broken(tenant_id: TenantDep) -> None:
        raise RuntimeError("secret internal detail")

    api.app.add_api_route("/v1/broken", broken, methods=["GET"])
    async with asgi_client(api.app, raise_app_exceptions=False) as client:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            response = await client.get("/v1/broken", headers={**api.headers, "X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.json()["error"] == {
        "code": "internal_error",
        "message": "internal server error",
        "details": {},
    }
    assert response.headers["x-request-id"] == "req-500"
    errors = [line for line in logs if line["event"] == "unhandled error"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "req-500"
    assert errors[0]["tenant_id"] == str(api.tenant_id)
    assert errors[0]["error_type"] == "RuntimeError"
    access = [line for line in logs if line["event"] == "request"]
    assert [(line["status"], line["request_id"]) for line in access] == [(500, "req-500")]
    metrics = (await api.client.get("/metrics")).text
    assert 'focal_http_requests_total{method="GET",route="/v1/broken",status="500"} 1.0' in metrics


async def test_metrics_never_label_with_a_raw_path(api: ApiHarness) -> None:
    agent_id = uuid4()
    limit = api.services.settings.server.max_body_bytes
    oversized = await api.client.post(  # refused by the size limit, before routing, without a token
        f"/v1/agents/{agent_id}/rules",
        content=b"{" + b" " * limit + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert oversized.status_code == 413
    slash = await api.client.get(f"/v1/agents/{agent_id}/", headers={"Host": "evil.example"})
    assert slash.status_code == 404
    assert "location" not in slash.headers
    assert slash.json()["error"]["code"] == "not_found"
    text = (await api.client.get("/metrics")).text
    assert str(agent_id) not in text
    assert 'focal_http_requests_total{method="POST",route="<unmatched>",status="413"} 1.0' in text
    assert 'focal_http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0' in text
    templates = set(api.app.openapi()["paths"]) | {"/openapi.json", UNMATCHED_ROUTE}
    assert set(re.findall(r'route="([^"]*)"', text)) <= templates


async def test_trailing_slash_is_not_redirected_to_the_host_header(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/agents/", json={"name": "a"}, headers={**api.headers, "Host": "evil.example"}
    )
    assert response.status_code == 404
    assert "evil.example" not in response.headers.get("location", "")
    assert (await api.services.config_store.get_agents(api.tenant_id))[1] == 0
