"""Rules, scenarios, templates, variables and tool activations under ``/v1/agents/{agent_id}``."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from tests.api.conftest import ApiHarness, bearer, define_tool


@pytest.fixture
async def base(api: ApiHarness) -> str:
    response = await api.client.post("/v1/agents", json={"name": "configured"}, headers=api.headers)
    return f"/v1/agents/{response.json()['id']}"


RULE = {
    "name": "refunds",
    "condition_text": "customer asks for a refund",
    "action_text": "explain the policy",
}


async def test_rule_crud_and_embeddings(api: ApiHarness, base: str) -> None:
    provider = api.services.embedding_provider
    created = await api.client.post(f"{base}/rules", json={**RULE, "priority": 5}, headers=api.headers)
    assert created.status_code == 201
    rule = created.json()
    assert rule["embedding_model"] == provider.model_id
    assert "embedding" not in rule
    stored = await api.services.config_store.get_rule(api.tenant_id, UUID(rule["id"]))
    assert stored is not None
    expected = await provider.embed(f"{RULE['condition_text']}\n{RULE['action_text']}")
    assert stored.embedding == pytest.approx(expected, rel=1e-6)  # stores keep float32

    url = f"{base}/rules/{rule['id']}"
    assert (await api.client.get(url, headers=api.headers)).json() == rule
    listing = (await api.client.get(f"{base}/rules", headers=api.headers)).json()
    assert [item["id"] for item in listing["items"]] == [rule["id"]]

    renamed = await api.client.patch(url, json={"name": "refund policy"}, headers=api.headers)
    assert renamed.json()["name"] == "refund policy"
    reworded = await api.client.patch(url, json={"condition_text": "wants money back"}, headers=api.headers)
    assert reworded.status_code == 200
    stored = await api.services.config_store.get_rule(api.tenant_id, UUID(rule["id"]))
    assert stored is not None
    expected = await provider.embed(f"wants money back\n{RULE['action_text']}")
    assert stored.embedding == pytest.approx(expected, rel=1e-6)

    assert (await api.client.delete(url, headers=api.headers)).status_code == 204
    assert (await api.client.get(url, headers=api.headers)).status_code == 404
    assert (await api.client.get(f"{base}/rules", headers=api.headers)).json()["items"] == []


async def test_rule_validation(api: ApiHarness, base: str) -> None:
    scoped = await api.client.post(f"{base}/rules", json={**RULE, "scope": "STEP"}, headers=api.headers)
    assert scoped.status_code == 422
    assert scoped.json()["error"]["message"].startswith("body: Value error, scope_id is required")
    priority = await api.client.post(f"{base}/rules", json={**RULE, "priority": 101}, headers=api.headers)
    assert priority.status_code == 422
    assert "body.priority" in priority.json()["error"]["message"]
    blank = await api.client.post(
        f"{base}/rules", json={**RULE, "condition_text": "   "}, headers=api.headers
    )
    assert blank.status_code == 422  # the embedder refuses blank text: nothing is saved
    embedding = await api.client.post(f"{base}/rules", json={**RULE, "embedding": [1.0]}, headers=api.headers)
    assert embedding.status_code == 422
    assert (await api.client.get(f"{base}/rules", headers=api.headers)).json()["items"] == []


async def test_scenario_crud_embeddings_and_versions(api: ApiHarness, base: str) -> None:
    start, done = str(uuid4()), str(uuid4())
    body = {
        "name": "returns",
        "entry_step_id": start,
        "entry_condition_text": "customer wants to return an item",
        "steps": [
            {
                "id": start,
                "name": "ask order",
                "transitions": [{"to_step_id": done, "condition_text": "gave order"}],
            },
            {"id": done, "name": "confirm", "is_terminal": True},
        ],
    }
    created = await api.client.post(f"{base}/scenarios", json=body, headers=api.headers)
    assert created.status_code == 201, created.text
    scenario = created.json()
    assert (scenario["version"], scenario["embedding_model"]) == (1, api.services.embedding_provider.model_id)
    stored = await api.services.config_store.get_scenario(api.tenant_id, UUID(scenario["id"]))
    assert stored is not None and stored.entry_embedding is not None
    assert stored.steps[0].transitions[0].condition_embedding is not None

    url = f"{base}/scenarios/{scenario['id']}"
    assert (await api.client.get(url, headers=api.headers)).json() == scenario
    renamed = (await api.client.patch(url, json={"name": "returns v1"}, headers=api.headers)).json()
    assert renamed["version"] == 1  # a name is not part of the flow

    steps = body["steps"]
    steps[0]["transitions"][0]["condition_text"] = "gave an order number"  # type: ignore[index]
    reflowed = await api.client.patch(url, json={"steps": steps}, headers=api.headers)
    assert reflowed.status_code == 200
    assert reflowed.json()["version"] == 2
    archived = await api.services.config_store.get_archived_scenario(api.tenant_id, UUID(scenario["id"]), 1)
    assert archived is not None and archived.steps[0].transitions[0].condition_text == "gave order"

    listing = (await api.client.get(f"{base}/scenarios", headers=api.headers)).json()
    assert [item["name"] for item in listing["items"]] == ["returns v1"]
    assert (await api.client.delete(url, headers=api.headers)).status_code == 204
    assert (await api.client.get(url, headers=api.headers)).status_code == 404


async def test_scenario_with_a_dangling_transition_is_422(api: ApiHarness, base: str) -> None:
    step = str(uuid4())
    body = {
        "name": "broken",
        "entry_step_id": step,
        "steps": [
            {"id": step, "name": "only", "transitions": [{"to_step_id": str(uuid4()), "condition_text": "x"}]}
        ],
    }
    response = await api.client.post(f"{base}/scenarios", json=body, headers=api.headers)
    assert response.status_code == 422
    assert "transition to unknown step" in response.json()["error"]["message"]
    no_steps = await api.client.post(
        f"{base}/scenarios", json={"name": "empty", "entry_step_id": step, "steps": []}, headers=api.headers
    )
    assert no_steps.status_code == 422
    assert (await api.client.get(f"{base}/scenarios", headers=api.headers)).json()["items"] == []


async def test_template_crud(api: ApiHarness, base: str) -> None:
    created = await api.client.post(
        f"{base}/templates",
        json={"name": "greet", "text": "Hello {name}", "mode": "EXCLUSIVE"},
        headers=api.headers,
    )
    assert created.status_code == 201
    url = f"{base}/templates/{created.json()['id']}"
    updated = await api.client.patch(url, json={"text": "Hi {name}"}, headers=api.headers)
    assert (updated.json()["text"], updated.json()["mode"]) == ("Hi {name}", "EXCLUSIVE")
    bad_mode = await api.client.patch(url, json={"mode": "SOMETIMES"}, headers=api.headers)
    assert bad_mode.status_code == 422
    assert [
        t["text"] for t in (await api.client.get(f"{base}/templates", headers=api.headers)).json()["items"]
    ] == ["Hi {name}"]
    assert (await api.client.delete(url, headers=api.headers)).status_code == 204
    assert (await api.client.get(url, headers=api.headers)).status_code == 404


async def test_variable_crud_and_conflict(api: ApiHarness, base: str) -> None:
    created = await api.client.post(
        f"{base}/variables", json={"name": "order_id", "default_value": {"a": [1]}}, headers=api.headers
    )
    assert created.status_code == 201
    assert created.json()["default_value"] == {"a": [1]}
    duplicate = await api.client.post(f"{base}/variables", json={"name": "order_id"}, headers=api.headers)
    assert duplicate.status_code == 409
    bad_name = await api.client.post(f"{base}/variables", json={"name": "Order-ID"}, headers=api.headers)
    assert bad_name.status_code == 422
    assert "body.name" in bad_name.json()["error"]["message"]
    url = f"{base}/variables/{created.json()['id']}"
    updated = await api.client.patch(url, json={"update_policy": "APPEND"}, headers=api.headers)
    assert updated.json()["update_policy"] == "APPEND"
    assert len((await api.client.get(f"{base}/variables", headers=api.headers)).json()["items"]) == 1
    assert (await api.client.delete(url, headers=api.headers)).status_code == 204
    assert (await api.client.get(url, headers=api.headers)).status_code == 404


async def test_tool_activation_crud_and_conflict(api: ApiHarness, base: str) -> None:
    await define_tool(api.client, api.headers, "lookup_order")
    created = await api.client.post(
        f"{base}/tools",
        json={"tool_id": "lookup_order", "policy_overrides": {"timeout": 3}},
        headers=api.headers,
    )
    assert created.status_code == 201
    again = await api.client.post(f"{base}/tools", json={"tool_id": "lookup_order"}, headers=api.headers)
    assert again.status_code == 409
    url = f"{base}/tools/lookup_order"
    assert (await api.client.get(url, headers=api.headers)).json()["policy_overrides"] == {"timeout": 3}
    disabled = await api.client.patch(url, json={"enabled": False}, headers=api.headers)
    assert (disabled.json()["enabled"], disabled.json()["policy_overrides"]) == (False, {"timeout": 3})
    listing = (await api.client.get(f"{base}/tools", headers=api.headers)).json()
    assert [item["tool_id"] for item in listing["items"]] == ["lookup_order"]
    assert (await api.client.delete(url, headers=api.headers)).status_code == 204
    assert (await api.client.get(url, headers=api.headers)).status_code == 404
    assert (await api.client.delete(url, headers=api.headers)).status_code == 404


async def test_children_of_another_tenants_agent_are_404(api: ApiHarness, base: str) -> None:
    rule = (await api.client.post(f"{base}/rules", json=RULE, headers=api.headers)).json()
    intruder = bearer(uuid4())
    for method, path, kwargs in (
        ("GET", f"{base}/rules", {}),
        ("GET", f"{base}/rules/{rule['id']}", {}),
        ("PATCH", f"{base}/rules/{rule['id']}", {"json": {"name": "x"}}),
        ("DELETE", f"{base}/rules/{rule['id']}", {}),
        ("POST", f"{base}/rules", {"json": RULE}),
        ("GET", f"{base}/scenarios", {}),
        ("GET", f"{base}/templates", {}),
        ("GET", f"{base}/variables", {}),
        ("GET", f"{base}/tools", {}),
        ("POST", f"{base}/memory/search", {"json": {"query": "refund"}}),
        ("GET", f"{base}/sessions", {}),
    ):
        response = await api.client.request(method, path, headers=intruder, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, (method, path)
    assert (await api.client.get(f"{base}/rules/{rule['id']}", headers=api.headers)).json()[
        "name"
    ] == "refunds"


async def test_child_of_another_agent_is_404(api: ApiHarness, base: str) -> None:
    rule = (await api.client.post(f"{base}/rules", json=RULE, headers=api.headers)).json()
    other = (await api.client.post("/v1/agents", json={"name": "other"}, headers=api.headers)).json()
    response = await api.client.get(f"/v1/agents/{other['id']}/rules/{rule['id']}", headers=api.headers)
    assert response.status_code == 404
