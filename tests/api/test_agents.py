"""``/v1/agents``: CRUD, pagination, validation, conflicts, soft delete and tenant isolation."""

from __future__ import annotations

from uuid import UUID, uuid4

from tests.api.conftest import ApiHarness, bearer


async def _create(api: ApiHarness, name: str, **fields: object) -> dict[str, object]:
    response = await api.client.post("/v1/agents", json={"name": name, **fields}, headers=api.headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_create_get_update_delete(api: ApiHarness) -> None:
    agent = await _create(api, "support", description="helps", temperature=0.2)
    assert agent["temperature"] == 0.2
    assert agent["tenant_id"] == str(api.tenant_id)
    url = f"/v1/agents/{agent['id']}"

    fetched = await api.client.get(url, headers=api.headers)
    assert fetched.json() == agent

    patched = await api.client.patch(url, json={"description": None, "max_tokens": 50}, headers=api.headers)
    assert patched.status_code == 200
    body = patched.json()
    assert (body["description"], body["max_tokens"], body["name"], body["temperature"]) == (
        None,
        50,
        "support",
        0.2,
    )
    assert body["updated_at"] >= agent["updated_at"]
    assert body["created_at"] == agent["created_at"]
    stored = await api.services.config_store.get_agent(api.tenant_id, UUID(str(agent["id"])))
    assert stored is not None and stored.max_tokens == 50

    deleted = await api.client.delete(url, headers=api.headers)
    assert deleted.status_code == 204
    assert (await api.client.get(url, headers=api.headers)).status_code == 404
    assert (await api.client.delete(url, headers=api.headers)).status_code == 404


async def test_pagination(api: ApiHarness) -> None:
    for index in range(5):
        await _create(api, f"agent-{index}")
    page = (await api.client.get("/v1/agents?limit=2&offset=1", headers=api.headers)).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    assert [item["name"] for item in page["items"]] == ["agent-3", "agent-2"]  # newest first
    assert (await api.client.get("/v1/agents?limit=0", headers=api.headers)).status_code == 422
    assert (await api.client.get("/v1/agents?offset=-1", headers=api.headers)).status_code == 422


async def test_validation_error_names_the_field_and_writes_nothing(api: ApiHarness) -> None:
    response = await api.client.post("/v1/agents", json={"name": "x" * 256}, headers=api.headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"] == "body.name: String should have at most 255 characters"
    assert error["details"]["errors"][0]["field"] == "body.name"
    assert (await api.services.config_store.get_agents(api.tenant_id))[1] == 0


async def test_out_of_range_and_unknown_fields_are_422(api: ApiHarness) -> None:
    too_hot = await api.client.post("/v1/agents", json={"name": "a", "temperature": 3}, headers=api.headers)
    assert too_hot.status_code == 422
    assert "body.temperature" in too_hot.json()["error"]["message"]
    unknown = await api.client.post("/v1/agents", json={"name": "a", "colour": "red"}, headers=api.headers)
    assert unknown.status_code == 422
    assert "body.colour: Extra inputs are not permitted" in unknown.json()["error"]["message"]
    assert (await api.services.config_store.get_agents(api.tenant_id))[1] == 0


async def test_patch_with_bad_values_changes_nothing(api: ApiHarness) -> None:
    agent = await _create(api, "steady")
    url = f"/v1/agents/{agent['id']}"
    null_name = await api.client.patch(url, json={"name": None}, headers=api.headers)
    assert null_name.status_code == 422
    assert null_name.json()["error"]["details"]["errors"][0]["field"] == "body.name"
    unknown = await api.client.patch(url, json={"nmae": "typo"}, headers=api.headers)
    assert unknown.status_code == 422
    assert (await api.client.get(url, headers=api.headers)).json() == agent


async def test_duplicate_name_is_409(api: ApiHarness) -> None:
    await _create(api, "twin")
    response = await api.client.post("/v1/agents", json={"name": "twin"}, headers=api.headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert (await api.services.config_store.get_agents(api.tenant_id))[1] == 1


async def test_other_tenants_agents_are_invisible(api: ApiHarness) -> None:
    agent = await _create(api, "private")
    url = f"/v1/agents/{agent['id']}"
    intruder = bearer(uuid4())
    for method, kwargs in (("GET", {}), ("PATCH", {"json": {"name": "stolen"}}), ("DELETE", {})):
        response = await api.client.request(method, url, headers=intruder, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, method
        assert response.json()["error"]["code"] == "not_found"
    listing = (await api.client.get("/v1/agents", headers=intruder)).json()
    assert listing["total"] == 0 and listing["items"] == []
    # Same name in another tenant is fine: names are unique per tenant only.
    assert (
        await api.client.post("/v1/agents", json={"name": "private"}, headers=intruder)
    ).status_code == 201
    assert (await api.client.get(url, headers=api.headers)).json()["name"] == "private"


async def test_malformed_id_is_422(api: ApiHarness) -> None:
    response = await api.client.get("/v1/agents/not-a-uuid", headers=api.headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["errors"][0]["field"] == "path.agent_id"


async def test_deleting_an_agent_soft_deletes_its_children(api: ApiHarness) -> None:
    agent = await _create(api, "parent")
    base = f"/v1/agents/{agent['id']}"
    rule = await api.client.post(
        f"{base}/rules",
        json={"name": "r", "condition_text": "refund", "action_text": "explain"},
        headers=api.headers,
    )
    template = await api.client.post(
        f"{base}/templates", json={"name": "t", "text": "Hi"}, headers=api.headers
    )
    assert rule.status_code == template.status_code == 201
    assert (await api.client.delete(base, headers=api.headers)).status_code == 204
    store = api.services.config_store
    assert await store.get_rule(api.tenant_id, UUID(rule.json()["id"])) is None
    assert await store.get_template(api.tenant_id, UUID(template.json()["id"])) is None
    assert (await api.client.get(f"{base}/rules", headers=api.headers)).status_code == 404
