"""Request bodies are strict about types: ``true`` is not an integer, ``"yes"`` is not a boolean,
``"12"`` is not a number, and names must say something. Refused input changes nothing.

What JSON can only carry as a string (UUIDs, enum values) is still parsed from its string.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from tests.api.conftest import ApiHarness

RULE = {"name": "refunds", "condition_text": "customer wants a refund", "action_text": "explain the policy"}


def _scenario(step_name: str = "start", **step: Any) -> dict[str, Any]:
    step_id = str(uuid4())
    return {
        "name": "returns",
        "entry_step_id": step_id,
        "steps": [{"id": step_id, "name": step_name, **step}],
    }


async def _agent(api: ApiHarness) -> str:
    response = await api.client.post("/v1/agents", json={"name": "strict"}, headers=api.headers)
    assert response.status_code == 201
    agent_id: str = response.json()["id"]
    return agent_id


def _refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert [e["field"] for e in response.json()["error"]["details"]["errors"]] == [field]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", True),
        ("max_tokens", "12"),
        ("max_tokens", 12.0),
        ("enabled", "yes"),
        ("enabled", 1),
        ("enabled", "true"),
        ("temperature", True),
        ("temperature", "0.5"),
        ("description", 5),
    ],
)
async def test_a_create_with_a_wrong_type_is_422_and_stores_nothing(
    api: ApiHarness, field: str, value: object
) -> None:
    response = await api.client.post("/v1/agents", json={"name": "a", field: value}, headers=api.headers)
    _refused(response, f"body.{field}")
    assert (await api.services.config_store.get_agents(api.tenant_id))[1] == 0


async def test_an_integer_is_a_number_and_strings_still_carry_ids_and_enums(api: ApiHarness) -> None:
    agent = await api.client.post("/v1/agents", json={"name": "a", "temperature": 1}, headers=api.headers)
    assert agent.status_code == 201 and agent.json()["temperature"] == 1.0
    base = f"/v1/agents/{agent.json()['id']}"
    rule = await api.client.post(f"{base}/rules", json={**RULE, "scope": "GLOBAL"}, headers=api.headers)
    assert rule.status_code == 201 and rule.json()["scope"] == "GLOBAL"
    scenario = await api.client.post(f"{base}/scenarios", json=_scenario(), headers=api.headers)
    assert scenario.status_code == 201
    chat = await api.client.post(
        f"{base}/chat",
        json={"channel": "WEB", "user_channel_id": "u1", "message": "hello"},
        headers=api.headers,
    )
    assert chat.status_code == 200


async def test_nested_request_bodies_are_strict_too(api: ApiHarness) -> None:
    base = f"/v1/agents/{await _agent(api)}"
    step_id = str(uuid4())
    transition = {"to_step_id": step_id, "condition_text": "done", "priority": True}
    body = {
        "name": "s",
        "entry_step_id": step_id,
        "steps": [{"id": step_id, "name": "a", "transitions": [transition]}],
    }
    _refused(
        await api.client.post(f"{base}/scenarios", json=body, headers=api.headers),
        "body.steps.0.transitions.0.priority",
    )
    terminal = _scenario(is_terminal="yes")
    _refused(
        await api.client.post(f"{base}/scenarios", json=terminal, headers=api.headers),
        "body.steps.0.is_terminal",
    )
    assert (await api.client.get(f"{base}/scenarios", headers=api.headers)).json()["items"] == []


async def test_a_patch_with_a_wrong_type_is_422_and_changes_nothing(api: ApiHarness) -> None:
    base = f"/v1/agents/{await _agent(api)}"
    rule = (await api.client.post(f"{base}/rules", json=RULE, headers=api.headers)).json()
    url = f"{base}/rules/{rule['id']}"
    _refused(await api.client.patch(url, json={"priority": True}, headers=api.headers), "body.priority")
    _refused(
        await api.client.patch(url, json={"is_hard_constraint": "no"}, headers=api.headers),
        "body.is_hard_constraint",
    )
    _refused(
        await api.client.patch(url, json={"attached_tool_ids": [1]}, headers=api.headers),
        "body.attached_tool_ids.0",
    )
    assert (await api.client.get(url, headers=api.headers)).json() == rule


async def test_search_and_profile_bodies_are_strict(api: ApiHarness) -> None:
    base = f"/v1/agents/{await _agent(api)}"
    search = await api.client.post(
        f"{base}/memory/search", json={"query": "x", "limit": True}, headers=api.headers
    )
    _refused(search, "body.limit")
    chat = await api.client.post(
        f"{base}/chat", json={"channel": "WEB", "user_channel_id": "u1", "message": "hi"}, headers=api.headers
    )
    profile_id = (
        await api.client.get(f"/v1/sessions/{chat.json()['session_id']}", headers=api.headers)
    ).json()["customer_profile_id"]
    url = f"/v1/profiles/{profile_id}/fields/nickname"
    _refused(
        await api.client.put(url, json={"value": "Bo", "verified": "yes"}, headers=api.headers),
        "body.verified",
    )
    assert (await api.client.get(f"{url}/history", headers=api.headers)).json()["items"] == []


@pytest.mark.parametrize("blank", ["", " ", "\t\n ", "\u00a0\u2003"])
async def test_blank_names_are_refused_everywhere(api: ApiHarness, blank: str) -> None:
    agent_id = await _agent(api)
    base = f"/v1/agents/{agent_id}"
    _refused(await api.client.post("/v1/agents", json={"name": blank}, headers=api.headers), "body.name")
    _refused(await api.client.patch(base, json={"name": blank}, headers=api.headers), "body.name")
    _refused(
        await api.client.post(f"{base}/rules", json={**RULE, "name": blank}, headers=api.headers), "body.name"
    )
    template = {"name": blank, "text": "hello"}
    _refused(await api.client.post(f"{base}/templates", json=template, headers=api.headers), "body.name")
    _refused(
        await api.client.post(f"{base}/scenarios", json={**_scenario(), "name": blank}, headers=api.headers),
        "body.name",
    )
    step = _scenario(step_name=blank)
    _refused(await api.client.post(f"{base}/scenarios", json=step, headers=api.headers), "body.steps.0.name")
    _refused(
        await api.client.post(f"{base}/tools", json={"tool_id": blank}, headers=api.headers), "body.tool_id"
    )

    assert [a["name"] for a in (await api.client.get("/v1/agents", headers=api.headers)).json()["items"]] == [
        "strict"
    ]
    for collection in ("rules", "templates", "scenarios", "tools"):
        assert (await api.client.get(f"{base}/{collection}", headers=api.headers)).json()["items"] == [], (
            collection
        )


async def test_a_name_with_surrounding_spaces_is_kept_as_given(api: ApiHarness) -> None:
    response = await api.client.post("/v1/agents", json={"name": "  Front desk "}, headers=api.headers)
    assert response.status_code == 201
    assert response.json()["name"] == "  Front desk "
