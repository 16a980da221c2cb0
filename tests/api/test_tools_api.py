"""``/v1/tools`` (tool definitions), activation against definitions, and
``/v1/sessions/{id}/variables``."""

from __future__ import annotations

import logging
from typing import Any
from uuid import uuid4

import httpx
import pytest
from structlog.testing import capture_logs

from focal.conversation.models import Channel, Session
from tests.api.conftest import ApiHarness, bearer

SECRET = "sk-tool-7d1e0b5a-never-shown"

TOOL: dict[str, Any] = {
    "name": "lookup_order",
    "description": "Find an order by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order_number": {"type": "string"}},
        "required": ["order_number"],
    },
    "http": {"url_template": "https://shop.example/orders/{order_number}", "secret_header": "X-Api-Key"},
    "secret": SECRET,
}


async def test_tool_definition_crud_never_shows_the_secret(
    api: ApiHarness, caplog: pytest.LogCaptureFixture
) -> None:
    client, headers = api.client, api.headers
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []

    def seen(response: httpx.Response) -> httpx.Response:
        bodies.append(response.text)
        bodies.append(str(response.headers))
        return response

    with capture_logs() as logs:
        created = seen(await client.post("/v1/tools", json=TOOL, headers=headers))
        assert created.status_code == 201, created.text
        assert created.headers["etag"] == '"1"'
        out = created.json()
        assert (out["has_secret"], out["secret"], out["revision"]) == (True, None, 1)
        assert out["http"]["url_template"] == TOOL["http"]["url_template"]
        assert seen(await client.post("/v1/tools", json=TOOL, headers=headers)).status_code == 409
        listed = seen(await client.get("/v1/tools", headers=headers)).json()
        assert [t["name"] for t in listed["items"]] == ["lookup_order"]
        url = "/v1/tools/lookup_order"
        described = seen(
            await client.patch(url, json={"description": "Orders."}, headers={**headers, "If-Match": '"1"'})
        )
        assert (described.json()["description"], described.json()["has_secret"]) == ("Orders.", True)
        stale = seen(
            await client.patch(url, json={"description": "x"}, headers={**headers, "If-Match": '"1"'})
        )
        assert stale.status_code == 412
        too_long = seen(await client.patch(url, json={"secret": SECRET * 1000}, headers=headers))
        assert too_long.status_code == 422
        cleared = seen(await client.patch(url, json={"secret": None}, headers=headers))
        assert (cleared.json()["has_secret"], cleared.json()["revision"]) == (False, 3)
        stored = await api.services.config_store.get_tool_definition(api.tenant_id, "lookup_order")
        assert stored is not None and stored.secret is None
        seen(await client.patch(url, json={"secret": SECRET}, headers=headers))
        stored = await api.services.config_store.get_tool_definition(api.tenant_id, "lookup_order")
        assert stored is not None and stored.secret is not None and stored.secret.get_secret_value() == SECRET
        spec = seen(await client.get("/openapi.json"))
        assert spec.status_code == 200
        assert seen(await client.delete(url, headers=headers)).status_code == 204
        assert seen(await client.get(url, headers=headers)).status_code == 404
        assert seen(await client.delete(url, headers=headers)).status_code == 404

    assert all(SECRET not in body for body in bodies)
    assert logs and all(SECRET not in repr(line) for line in logs)
    assert all(SECRET not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"parameters": {"type": "string"}}, "body.parameters"),
        ({"parameters": {"type": "object", "properties": {}}}, "body"),  # {order_number} undeclared
        ({"http": {"url_template": "https://{host}/x"}}, "body.http.url_template"),
        (
            {"http": {"url_template": "https://shop.example/x", "headers": {"Host": "evil"}}},
            "body.http.headers",
        ),
        ({"http": {"url_template": "https://shop.example/x"}}, "body"),  # a secret without its header
        ({"name": "Bad-Name"}, "body.name"),
        (
            {"http": {"url_template": "https://shop.example/x", "timeout_seconds": "5"}},
            "body.http.timeout_seconds",
        ),
        # A format spec would be applied to the argument at call time: a width of 999999999
        # builds a gigabyte string; a nested field raises; a conversion alters the value.
        (
            {"http": {"url_template": "https://shop.example/{order_number:>999999999}"}},
            "body.http.url_template",
        ),
        ({"http": {"url_template": "https://shop.example/{order_number:{x}}"}}, "body.http.url_template"),
        ({"http": {"url_template": "https://shop.example/{order_number!r}"}}, "body.http.url_template"),
        # Headers that HTTP cannot carry fail every call (or split the request): refused when written.
        (
            {"http": {**TOOL["http"], "headers": {"X-Note": "caf\u00e9"}}},
            "body.http.headers",
        ),
        (
            {"http": {**TOOL["http"], "headers": {"X-Note": "a\r\nX-Injected: 1"}}},
            "body.http.headers",
        ),
        ({"http": {**TOOL["http"], "headers": {"X Note": "a"}}}, "body.http.headers"),
        ({"http": {**TOOL["http"], "secret_header": "X-Api-Key:"}}, "body.http.secret_header"),
        ({"secret": "p\u00e4ss-word"}, "body.secret"),
        ({"secret": "line\nbreak"}, "body.secret"),
        (  # a reference jsonschema would download (any host, blocking the event loop)
            {
                "parameters": {
                    "type": "object",
                    "properties": {"order_number": {"$ref": "http://169.254.169.254/latest/meta-data"}},
                }
            },
            "body.parameters",
        ),
    ],
)
async def test_invalid_definitions_are_422_and_create_nothing(
    api: ApiHarness, change: dict[str, Any], field: str
) -> None:
    response = await api.client.post("/v1/tools", json={**TOOL, **change}, headers=api.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["errors"][0]["field"].startswith(field)
    assert SECRET not in response.text
    assert await api.services.config_store.get_tool_definitions(api.tenant_id) == []


async def test_tool_definitions_are_per_tenant(api: ApiHarness) -> None:
    assert (await api.client.post("/v1/tools", json=TOOL, headers=api.headers)).status_code == 201
    intruder = bearer(uuid4())
    assert (await api.client.get("/v1/tools", headers=intruder)).json()["items"] == []
    url = "/v1/tools/lookup_order"
    assert (await api.client.get(url, headers=intruder)).status_code == 404
    assert (await api.client.patch(url, json={"description": "x"}, headers=intruder)).status_code == 404
    assert (await api.client.delete(url, headers=intruder)).status_code == 404
    kept = (await api.client.get(url, headers=api.headers)).json()
    assert (kept["description"], kept["revision"]) == (TOOL["description"], 1)
    # The intruder's agent cannot activate a tool only another tenant defined.
    agent = (await api.client.post("/v1/agents", json={"name": "a"}, headers=intruder)).json()
    refused = await api.client.post(
        f"/v1/agents/{agent['id']}/tools", json={"tool_id": "lookup_order"}, headers=intruder
    )
    assert refused.status_code == 422


async def test_activation_needs_a_live_definition(api: ApiHarness) -> None:
    agent = (await api.client.post("/v1/agents", json={"name": "a"}, headers=api.headers)).json()
    base = f"/v1/agents/{agent['id']}/tools"
    unknown = await api.client.post(base, json={"tool_id": "lookup_order"}, headers=api.headers)
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"]["errors"][0]["field"] == "body.tool_id"
    assert (await api.client.get(base, headers=api.headers)).json()["items"] == []
    await api.client.post("/v1/tools", json=TOOL, headers=api.headers)
    assert (
        await api.client.post(base, json={"tool_id": "lookup_order"}, headers=api.headers)
    ).status_code == 201
    await api.client.delete("/v1/tools/lookup_order", headers=api.headers)
    again = await api.client.post(
        "/v1/agents", json={"name": "b"}, headers=api.headers
    )  # a deleted definition cannot be activated anew
    refused = await api.client.post(
        f"/v1/agents/{again.json()['id']}/tools", json={"tool_id": "lookup_order"}, headers=api.headers
    )
    assert refused.status_code == 422


async def _session(api: ApiHarness) -> Session:
    agent = (await api.client.post("/v1/agents", json={"name": "s"}, headers=api.headers)).json()
    session = Session(
        tenant_id=api.tenant_id, agent_id=agent["id"], channel=Channel.WEB, user_channel_id="alice"
    )
    session.variables = {"order_number": "FD-10234", "note": "keep"}
    return await api.services.session_store.save(session)


async def test_session_variables_read_and_patch_under_the_version(api: ApiHarness) -> None:
    session = await _session(api)
    url = f"/v1/sessions/{session.session_id}/variables"
    read = await api.client.get(url, headers=api.headers)
    assert read.status_code == 200 and read.headers["etag"] == f'"{session.version}"'
    assert read.json()["variables"] == {"order_number": "FD-10234", "note": "keep"}

    patched = await api.client.patch(
        url,
        json={
            "version": read.json()["version"],
            "variables": {"order_number": "FD-10235", "note": None, "n": [1]},
        },
        headers=api.headers,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["variables"] == {"order_number": "FD-10235", "n": [1]}
    assert body["version"] == session.version + 1 and set(body["set_at"]) == {"order_number", "n"}
    events = await api.services.audit_store.list_events(api.tenant_id, session_id=session.session_id)
    assert [e.event_data["names"] for e in events] == [["n", "note", "order_number"]]

    stale = await api.client.patch(
        url, json={"version": read.json()["version"], "variables": {"order_number": "X"}}, headers=api.headers
    )
    assert stale.status_code == 409
    stored = await api.services.session_store.get(api.tenant_id, session.session_id)
    assert stored is not None and stored.variables == body["variables"] and stored.version == body["version"]

    for bad in ({"version": body["version"], "variables": {"Bad Name": 1}}, {"variables": {"a": 1}}):
        assert (await api.client.patch(url, json=bad, headers=api.headers)).status_code == 422
    intruder = bearer(uuid4())
    assert (await api.client.get(url, headers=intruder)).status_code == 404
    foreign = await api.client.patch(
        url, json={"version": body["version"], "variables": {"a": 1}}, headers=intruder
    )
    assert foreign.status_code == 404
    assert (await api.client.get(f"/v1/sessions/{uuid4()}/variables", headers=api.headers)).status_code == 404
    final = await api.services.session_store.get(api.tenant_id, session.session_id)
    assert final is not None and final.variables == body["variables"]


async def test_moving_a_tool_to_another_host_needs_its_secret_again(api: ApiHarness) -> None:
    """The secret is write-only; without this, anyone holding a token could read it anyway by
    pointing the tool at a server of theirs and letting the next call carry it there."""
    assert (await api.client.post("/v1/tools", json=TOOL, headers=api.headers)).status_code == 201
    url = "/v1/tools/lookup_order"
    elsewhere = {**TOOL["http"], "url_template": "https://collector.example/{order_number}"}

    refused = await api.client.patch(url, json={"http": elsewhere}, headers=api.headers)

    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"]["errors"][0]["field"] == "body.secret"
    stored = await api.services.config_store.get_tool_definition(api.tenant_id, "lookup_order")
    assert stored is not None and stored.revision == 1
    assert stored.http.url_template == TOOL["http"]["url_template"]
    # Same origin, another path: the secret stays. Another host with the secret (or null): fine.
    same_host = {**TOOL["http"], "url_template": "https://shop.example/v2/orders/{order_number}"}
    kept = await api.client.patch(url, json={"http": same_host}, headers=api.headers)
    assert (kept.status_code, kept.json()["has_secret"]) == (200, True)
    moved = await api.client.patch(url, json={"http": elsewhere, "secret": "new-key"}, headers=api.headers)
    assert (moved.status_code, moved.json()["has_secret"]) == (200, True)
    dropped = await api.client.patch(
        url,
        json={"http": {**elsewhere, "url_template": "https://third.example/{order_number}"}, "secret": None},
        headers=api.headers,
    )
    assert (dropped.status_code, dropped.json()["has_secret"]) == (200, False)
