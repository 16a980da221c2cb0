"""``/v1/webhooks``: the secret shown once, revisions as ETags with If-Match, URL rules, tenant
isolation, deliveries listing."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.webhooks.signing import SECRET_PREFIX
from tests.api.conftest import bearer
from tests.api.control_support import ControlApi, control_api, open_control_api

__all__ = ["control_api"]  # fixture

HOOK = {"url": "https://hooks.example.com/focal", "event_types": ["session.handoff_requested"]}


async def _create(api: ControlApi, **fields: Any) -> dict[str, Any]:
    response = await api.client.post("/v1/webhooks", json={**HOOK, **fields}, headers=api.headers)
    assert response.status_code == 201, response.text
    assert response.headers["etag"] == '"1"'
    return dict(response.json())


async def test_the_secret_is_returned_on_create_and_never_again(control_api: ControlApi) -> None:
    api = control_api
    created = await _create(api, description="ops team")
    assert created["secret"].startswith(SECRET_PREFIX) and created["revision"] == 1
    read = await api.client.get(f"/v1/webhooks/{created['id']}", headers=api.headers)
    listed = await api.client.get("/v1/webhooks", headers=api.headers)
    patched = await api.client.patch(
        f"/v1/webhooks/{created['id']}", json={"enabled": False}, headers=api.headers
    )
    for body in (read.json(), listed.json()["items"][0], patched.json()):
        assert "secret" not in body
        assert created["secret"] not in str(body)
    assert (read.json()["description"], patched.json()["enabled"], patched.json()["revision"]) == (
        "ops team",
        False,
        2,
    )


async def test_rotation_returns_a_new_secret_once_and_replaces_the_old(control_api: ControlApi) -> None:
    api = control_api
    created = await _create(api)
    rotated = await api.client.post(f"/v1/webhooks/{created['id']}/secret", headers=api.headers)
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != created["secret"] and rotated.json()["revision"] == 2
    stored = await api.services.webhook_store.get_endpoint(api.tenant_id, UUID(created["id"]))
    assert stored is not None and stored.secret == rotated.json()["secret"]
    stale = await api.client.post(
        f"/v1/webhooks/{created['id']}/secret", headers={**api.headers, "If-Match": '"1"'}
    )
    assert (stale.status_code, stale.headers["etag"]) == (412, '"2"')


async def test_patch_honours_if_match_and_keeps_what_it_does_not_send(control_api: ControlApi) -> None:
    api = control_api
    created = await _create(api)
    path = f"/v1/webhooks/{created['id']}"
    stale = await api.client.patch(path, json={"enabled": False}, headers={**api.headers, "If-Match": '"7"'})
    assert stale.status_code == 412
    done = await api.client.patch(
        path, json={"url": "https://other.example.com/h"}, headers={**api.headers, "If-Match": '"1"'}
    )
    assert (done.status_code, done.json()["url"], done.json()["enabled"], done.headers["etag"]) == (
        200, "https://other.example.com/h", True, '"2"',
    )  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        {**HOOK, "url": "http://hooks.example.com/h"},  # plain http (not allowed by default)
        {**HOOK, "url": "ftp://hooks.example.com/h"},
        {**HOOK, "url": "https://user:pw@hooks.example.com/h"},
        {**HOOK, "url": "/relative"},
        {**HOOK, "url": "https://hooks.example.com/h\t"},  # no HTTP client can send to these
        {**HOOK, "url": "https://xn--zz.example.com/h"},
        {**HOOK, "event_types": []},
        {**HOOK, "event_types": ["session.unknown"]},
        {**HOOK, "secret": "mine"},  # the secret is Focal's to generate
    ],
)
async def test_bad_endpoints_are_refused_and_nothing_is_created(body: dict[str, Any]) -> None:
    async with open_control_api(webhooks={"allow_http": False}) as api:
        refused = await api.client.post("/v1/webhooks", json=body, headers=api.headers)
        assert refused.status_code == 422, refused.text
        assert (await api.client.get("/v1/webhooks", headers=api.headers)).json()["items"] == []


async def test_allowed_hosts_restrict_endpoint_urls() -> None:
    async with open_control_api(webhooks={"allowed_hosts": ["hooks.example.com"]}) as api:
        assert (await api.client.post("/v1/webhooks", json=HOOK, headers=api.headers)).status_code == 201
        elsewhere = {**HOOK, "url": "https://169.254.169.254/latest"}
        refused = await api.client.post("/v1/webhooks", json=elsewhere, headers=api.headers)
        assert refused.status_code == 422 and "ALLOWED_HOSTS" in refused.json()["error"]["message"]


async def test_another_tenants_endpoints_are_invisible(control_api: ControlApi) -> None:
    api = control_api
    created = await _create(api)
    other = bearer(uuid4())
    path = f"/v1/webhooks/{created['id']}"
    assert (await api.client.get("/v1/webhooks", headers=other)).json()["items"] == []
    for response in (
        await api.client.get(path, headers=other),
        await api.client.patch(path, json={"enabled": False}, headers=other),
        await api.client.post(f"{path}/secret", headers=other),
        await api.client.get(f"{path}/deliveries", headers=other),
        await api.client.delete(path, headers=other),
    ):
        assert response.status_code == 404, response.text
    still = await api.client.get(path, headers=api.headers)
    assert (still.status_code, still.json()["revision"], still.json()["enabled"]) == (200, 1, True)


async def test_delete_removes_the_endpoint(control_api: ControlApi) -> None:
    api = control_api
    created = await _create(api)
    assert (await api.client.delete(f"/v1/webhooks/{created['id']}", headers=api.headers)).status_code == 204
    assert (await api.client.get(f"/v1/webhooks/{created['id']}", headers=api.headers)).status_code == 404
    assert (await api.client.delete(f"/v1/webhooks/{created['id']}", headers=api.headers)).status_code == 404
