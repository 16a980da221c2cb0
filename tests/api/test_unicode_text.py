"""Text that is not Unicode is refused at the HTTP boundary, on every route and every backend.

``"\\ud800"`` is valid JSON but a lone UTF-16 surrogate is not a character: it cannot be encoded
in a response (once stored, every list containing it would fail) and PostgreSQL refuses it. The
request gets a 422 envelope naming the field, and nothing is stored.
"""

from __future__ import annotations

import json
from uuid import uuid4

import pytest

from focal.conversation.models import Channel
from tests.api.conftest import ApiHarness


def _json(raw: str) -> bytes:
    """A JSON body written by hand, so ``\\ud800`` reaches the server as the escape it is."""
    json.loads(raw)  # valid JSON: the point is that it is not valid text
    return raw.encode()


async def test_lone_surrogates_are_422_on_every_route_and_nothing_is_stored(backend_api: ApiHarness) -> None:
    api = backend_api
    agent = (await api.client.post("/v1/agents", json={"name": "kept"}, headers=api.headers)).json()
    base = f"/v1/agents/{agent['id']}"
    profile = await api.services.profile_store.get_or_create(api.tenant_id, Channel.WEB, "visitor")
    cases = [
        ("POST", "/v1/agents", r'{"name": "a\ud800"}', "body.name"),
        ("PATCH", base, r'{"description": "x\udc00y"}', "body.description"),
        (
            "POST",
            f"{base}/variables",
            r'{"name": "v", "default_value": {"k": ["ok", "\ud800"]}}',
            "body.default_value.k.1",
        ),
        (
            "POST",
            f"{base}/tools",
            r'{"tool_id": "t", "policy_overrides": {"\udfff": 1}}',
            "body.policy_overrides",
        ),
        (
            "POST",
            f"{base}/rules",
            r'{"name": "r", "condition_text": "refund \ud83d", "action_text": "explain"}',
            "body.condition_text",
        ),
        (
            "POST",
            f"{base}/chat",
            r'{"channel": "WEB", "user_channel_id": "u", "message": "hi \ud800"}',
            "body.message",
        ),
        ("PUT", f"/v1/profiles/{profile.id}/fields/nickname", r'{"value": "\ude00"}', "body.value"),
    ]
    for method, path, raw, field in cases:
        response = await api.client.request(
            method, path, content=_json(raw), headers={**api.headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, (method, path, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert error["details"]["errors"][0]["field"] == field
        assert "surrogate" in error["message"]

    listed = await api.client.get("/v1/agents", headers=api.headers)
    assert listed.status_code == 200
    assert [(a["name"], a["description"]) for a in listed.json()["items"]] == [("kept", None)]
    for collection in ("variables", "tools", "rules", "sessions"):
        response = await api.client.get(f"{base}/{collection}", headers=api.headers)
        assert response.status_code == 200 and response.json()["items"] == [], collection
    reloaded = await api.services.profile_store.get_by_customer_id(api.tenant_id, profile.id)
    assert reloaded is not None and "nickname" not in reloaded.fields


async def test_surrogate_pairs_are_text(backend_api: ApiHarness) -> None:
    api = backend_api
    response = await api.client.post(
        "/v1/agents",
        content=_json(r'{"name": "smile \ud83d\ude00"}'),
        headers={**api.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 201
    assert response.json()["name"] == "smile \N{GRINNING FACE}"
    listed = await api.client.get("/v1/agents", headers=api.headers)
    assert [a["name"] for a in listed.json()["items"]] == ["smile \N{GRINNING FACE}"]


@pytest.mark.parametrize(
    "body",
    [
        # a surrogate's UTF-8 bytes (json.loads decodes bytes with surrogatepass)
        b'{"name": "v", "default_value": "a\xed\xa0\x80"}',
        # JSON in UTF-16 holding a raw surrogate
        '{"name": "v", "default_value": "a\ud800"}'.encode("utf-16-le", "surrogatepass"),
    ],
    ids=["raw-bytes", "utf-16"],
)
async def test_surrogates_in_any_encoding_are_refused(api: ApiHarness, body: bytes) -> None:
    agent = (await api.client.post("/v1/agents", json={"name": "a"}, headers=api.headers)).json()
    url = f"/v1/agents/{agent['id']}/variables"
    response = await api.client.post(
        url, content=body, headers={**api.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"]["errors"][0]["field"] == "body.default_value"
    assert (await api.client.get(url, headers=api.headers)).json()["items"] == []


async def test_an_escaped_backslash_is_plain_text(api: ApiHarness) -> None:
    response = await api.client.post(
        "/v1/agents",
        content=_json(r'{"name": "ok", "description": "\\ud800"}'),
        headers={**api.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 201
    assert response.json()["description"] == "\\ud800"


async def test_a_surrogate_in_the_decoded_path_is_422(api: ApiHarness) -> None:
    """Servers decode the path; one that does so with ``surrogateescape`` would hand the app a
    surrogate (httpx and uvicorn replace it, so this request is built by hand)."""
    messages: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        messages.append(message)

    path = "/v1/profiles/" + str(uuid4()) + "/fields/n\udcffx/history"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", api.headers["Authorization"].encode())],
        "server": ("focal.test", 80),
        "client": ("127.0.0.1", 1234),
    }
    await api.app(scope, receive, send)
    assert messages[0]["status"] == 422
    body = json.loads(messages[1]["body"])  # type: ignore[arg-type]
    assert body["error"]["details"]["errors"][0]["field"] == "path"


async def test_an_encoded_surrogate_in_the_query_is_replaced_not_a_500(api: ApiHarness) -> None:
    response = await api.client.get(
        "/v1/profiles/by-channel?channel=WEB&user_channel_id=%ED%A0%80", headers=api.headers
    )
    assert response.status_code == 404  # decoded as U+FFFD by Starlette: an ordinary unknown id
    assert response.json()["error"]["code"] == "not_found"
